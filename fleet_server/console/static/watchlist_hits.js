/*
 * The watchlist-hit page: the hits a person must confirm or reject before
 * anyone is dispatched, oldest first, refreshed from the live alert feed.
 *
 * Viewing hits and the watchlist entries behind them needs a stated purpose
 * (X-Purpose: case, FIR, alert or note). The page asks once per session
 * (kept in sessionStorage with the token it was given under, so a new
 * sign-in asks again) and sends it with every call; the server records each
 * view with it. A purpose the server refuses is forgotten and asked again.
 *
 * Each hit shows how it matched: EXACT, or CONFUSABLE with the look-alike
 * character marked in both the read and the listed plate (never by colour
 * alone), FACE with its score; the node, camera and time, the frames that
 * agreed, the crop's SHA-256, and the dispatch gate as the server states
 * it. The entry's note and its list's purpose come from a separate,
 * recorded call ("Show list entry"). "Show photos" puts the captured crop
 * (GET /evidence/<sha256>/file?alert_id=…) beside the person's enrolment
 * photos (GET /watchlist-hits/<id>/photos/<sha256>), each view recorded
 * with the purpose and the hit's alert; the bytes become data: URLs (the
 * console's CSP allows no blob:). A crop not on the server yet is said in
 * words (uploading, asked for, not uploaded yet, deleted), with "Ask the
 * node for it" (POST /evidence/requests) where that helps. Confirm and
 * reject both ask for a reason.
 *
 * Keyboard: the list is one Tab stop (roving focus); on a hit ↑/↓ (k/j)
 * move, Home/End jump, E shows the entry, P shows the photos, C confirms,
 * R rejects, D tries to dispatch (the server's refusal says why while the
 * hit is pending). Everything from the server is written with textContent.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const PURPOSE_KEY = "nb.hitPurpose";
  const RELOAD_DEBOUNCE_MS = 300;
  const list = document.getElementById("hit-list");
  const count = document.getElementById("hit-count");
  const empty = document.getElementById("queue-empty");
  const purposeForm = document.getElementById("purpose-form");
  const purposeShown = document.getElementById("purpose-shown");
  const purposeError = document.getElementById("purpose-error");
  const figureRows = document.getElementById("figure-rows");
  const dialog = document.getElementById("decide-dialog");
  const decideForm = document.getElementById("decide-form");
  const decideReason = document.getElementById("decide-reason");
  const decideError = document.getElementById("decide-error");
  const hits = new Map(); // event_id → {hit, item}
  const entries = new Map(); // event_id → the entry answer already viewed (kept across reloads)
  const photos = new Map(); // event_id → {crop, enrolment, viewedFor} already viewed (likewise)
  let current = null; // event_id of the hit holding the roving focus
  let pendingDecision = null;
  let reloadTimer = null;

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));

  // ------------------------------------------------------------ purpose

  function purpose() {
    try {
      const kept = JSON.parse(sessionStorage.getItem(PURPOSE_KEY) || "null");
      if (kept && kept.token === (NB.token() || "").slice(-16) && kept.purpose) {
        return kept.purpose;
      }
    } catch (_err) {
      /* unreadable: ask again */
    }
    return "";
  }

  function showPurpose() {
    const stated = purpose();
    purposeForm.hidden = Boolean(stated);
    purposeShown.hidden = !stated;
    document.getElementById("purpose-text").textContent = stated;
    if (!stated) {
      hits.clear();
      entries.clear(); // a new purpose means a new, recorded view
      photos.clear();
      list.replaceChildren();
      count.textContent = "0";
      empty.hidden = false;
      empty.textContent = "State a purpose to see the hits.";
    }
    return stated;
  }

  function forgetPurpose() {
    sessionStorage.removeItem(PURPOSE_KEY);
    showPurpose();
    document.getElementById("purpose-ref").focus();
  }

  /* A call that shows watchlist data: with the purpose, forgotten when refused. */
  async function viewApi(path) {
    const stated = purpose();
    if (!stated) {
      throw new NB.ApiError(428, "State a purpose first.");
    }
    try {
      return await NB.api(path, { headers: { "X-Purpose": stated } });
    } catch (err) {
      if (err.status === 428 || err.status === 422) {
        forgetPurpose();
        purposeError.textContent = `The server refused this purpose: ${err.message}`;
        purposeError.hidden = false;
      }
      throw err;
    }
  }

  /* Image bytes that need the purpose, as a data: URL (or an ApiError saying why not). */
  async function viewImage(path) {
    const stated = purpose();
    if (!stated) {
      throw new NB.ApiError(428, "State a purpose first.");
    }
    let response;
    try {
      response = await fetch(`${NB.apiBase}${path}`, {
        headers: { Authorization: `Bearer ${NB.token() || ""}`, "X-Purpose": stated },
      });
    } catch (_err) {
      throw new NB.ApiError(0, "The fleet server cannot be reached.");
    }
    if (response.status === 401) {
      NB.signOut("expired");
      throw new NB.ApiError(401, "Your session has ended. Please sign in again.");
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      if (response.status === 428 || response.status === 422) {
        forgetPurpose();
      }
      const detail = body && body.detail;
      const text = typeof detail === "string" ? detail : (detail && detail.message) || "";
      throw new NB.ApiError(response.status, text || `HTTP ${response.status}`);
    }
    const blob = await response.blob();
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result));
      reader.onerror = () => reject(new NB.ApiError(0, "the picture could not be read"));
      reader.readAsDataURL(blob);
    });
  }

  // ------------------------------------------------------------ rendering

  const el = NB.el;

  function when(iso) {
    return iso ? `${iso.slice(0, 19).replace("T", " ")} UTC` : "";
  }

  /* A plate key with the characters at `marks` in <mark> (read vs listed). */
  function plateKey(text, marks, testid) {
    const span = el("span", { className: "plate-key", testid });
    span.setAttribute("translate", "no");
    [...(text || "–")].forEach((ch, i) => {
      if (marks.includes(i)) {
        const mark = el("mark", { text: ch });
        mark.title = `character ${i + 1} differs`;
        span.append(mark);
      } else {
        span.append(ch);
      }
    });
    return span;
  }

  function matchBadge(hit) {
    const badge = el("span", { className: `match match-${hit.match}`, testid: "hit-match" });
    badge.dataset.match = hit.match;
    if (hit.match === "exact") {
      badge.textContent = "EXACT match";
    } else if (hit.match === "face") {
      badge.textContent = "FACE match: compare the photos before confirming";
    } else {
      const where = hit.differs_at.map((i) => i + 1).join(", ");
      badge.textContent = where
        ? `CONFUSABLE: one look-alike character (position ${where})`
        : "CONFUSABLE: one look-alike character";
    }
    return badge;
  }

  function fact(dl, term, value, testid) {
    const dt = el("dt", { text: term });
    const dd = el("dd", { testid });
    if (value instanceof Node) {
      dd.append(value);
    } else {
      dd.textContent = value === null || value === undefined || value === "" ? "–" : value;
    }
    dl.append(dt, dd);
    return dd;
  }

  function renderHit(hit) {
    const item = el("li", { className: "hit", testid: "hit" });
    item.dataset.eventId = hit.event_id;
    item.dataset.match = hit.match;
    item.tabIndex = -1;
    const heading = el("h3", { className: "hit-heading" });
    const severity = hit.alert ? hit.alert.severity : "";
    if (severity) {
      heading.append(el("span", { text: severity, className: `badge badge-${severity.toLowerCase()}` }), " ");
    }
    heading.append(`${hit.watchlist_name} · ${(hit.category || "").replace(/_/g, " ")}`);
    item.setAttribute("aria-label", `${severity} hit on ${hit.watchlist_name}, ${hit.match} match, ${hit.node_id}`);
    item.append(heading, matchBadge(hit));

    const plates = el("div", { className: "hit-plates" });
    plates.hidden = hit.subject === "person";
    const read = el("div", { className: "plate-box" });
    read.append(el("span", { text: "Camera read", className: "plate-label" }),
      plateKey(hit.plate, hit.differs_at, "hit-read"));
    const listed = el("div", { className: "plate-box" });
    listed.append(el("span", { text: "On the list", className: "plate-label" }),
      plateKey(hit.listed, hit.differs_at, "hit-listed"));
    plates.append(read, listed);
    item.append(plates);

    const facts = el("dl", { className: "hit-facts" });
    fact(facts, "Where", `${hit.node_id} · camera ${hit.camera_id}` +
      (hit.alert && hit.alert.district ? ` · ${hit.alert.district}` : ""));
    fact(facts, "When", when(hit.ts));
    if (hit.score !== null && hit.score !== undefined) {
      fact(facts, "Score", `${hit.score.toFixed(2)} (similarity, weighted over the agreeing frames)`,
        "hit-score");
    } else {
      fact(facts, "Confidence", `${Math.round(hit.confidence * 100)} %`, "hit-score");
    }
    fact(facts, "Frames agreed", hit.frames === null || hit.frames === undefined ? "–"
      : `${hit.frames} of track ${hit.track_id || "–"}`, "hit-frames");
    const crop = el("code", { className: "sha", testid: "hit-crop" });
    crop.textContent = hit.snapshot_sha256 ? `sha256:${hit.snapshot_sha256}` : "no crop reported";
    fact(facts, "Crop", crop);
    fact(facts, "Alert", hit.alert ? `${hit.alert.id} · ${hit.alert.state.replace(/_/g, " ")}` : "–");
    item.append(facts);
    item.append(renderPhotos(hit));

    const gate = el("p", { className: "gate", testid: "hit-gate" });
    gate.id = `gate-${hit.event_id}`;
    gate.textContent = hit.dispatch_blocked
      ? `Dispatch locked: ${hit.dispatch_blocked}`
      : "Dispatch allowed.";
    gate.dataset.locked = String(Boolean(hit.dispatch_blocked));
    item.append(gate);

    const entry = el("div", { className: "hit-entry", testid: "hit-entry" });
    entry.hidden = true;
    item.append(entry);
    if (entries.has(hit.event_id)) {
      fillEntry(entry, entries.get(hit.event_id));
    }

    const actions = el("div", { className: "actions hit-actions" });
    const buttons = [
      ["Show list entry", "entry", "btn btn-small", () => showEntry(hit.event_id)],
      ["Show photos", "photos", "btn btn-small", () => showPhotos(hit.event_id)],
      ["Confirm…", "confirm", "btn btn-small btn-primary", () => decide(hit.event_id, "confirmed")],
      ["Reject…", "reject", "btn btn-small btn-warn", () => decide(hit.event_id, "rejected")],
      ["Dispatch", "dispatch", "btn btn-small btn-quiet", () => dispatch(hit.event_id)],
    ];
    for (const [label, key, className, run] of buttons) {
      const button = el("button", { text: label, className, testid: `hit-${key}` });
      button.type = "button";
      button.tabIndex = -1;
      if (key === "dispatch" && hit.dispatch_blocked) {
        button.setAttribute("aria-describedby", gate.id);
      }
      button.addEventListener("click", run);
      actions.append(button);
    }
    item.append(actions);
    item.addEventListener("focus", () => setCurrent(hit.event_id, false));
    item.addEventListener("click", () => setCurrent(hit.event_id, false));
    return item;
  }

  /* What the card says about the crop before (or instead of) showing it. */
  const CROP_STATES = {
    stored: "On the server. “Show photos” shows it (the view is recorded).",
    uploading: "Uploading from the node",
    requested: "Asked of the node: it uploads the crop at its next poll.",
    not_uploaded: "Not on the server yet: the node uploads a hit's crop by itself.",
    deleted: "Deleted from the server by retention.",
  };

  function cropText(crop) {
    if (!crop) {
      return "The node sent no crop with this hit.";
    }
    if (crop.state === "uploading") {
      return `${CROP_STATES.uploading}: ${crop.received} of ${crop.size} bytes so far.`;
    }
    return CROP_STATES[crop.state] || crop.state;
  }

  function picture(box, url, alt, testid) {
    const img = el("img", { className: "hit-photo", testid });
    img.alt = alt;
    img.src = url;
    box.append(img);
  }

  /* The crop beside the enrolment photos: words until "Show photos" fetched them. */
  /* One node-captured picture (the crop, or the frame it came from): the image once
   * viewed, else where it stands in words, with "Ask the node for it" when not uploaded. */
  function evidenceFigure(hit, ref, { key, caption, url, error, alt }) {
    const box = el("figure", { className: `hit-figure hit-figure-${key}`, testid: `hit-${key}-figure` });
    box.dataset.state = ref ? ref.state : "none";
    box.append(el("figcaption", { text: caption }));
    if (url) {
      picture(box, url, alt, `hit-${key}-img`);
      return box;
    }
    const text = error || (ref ? cropText(ref) : key === "crop"
      ? "The node sent no crop with this hit." : "The node sent no frame with this hit.");
    box.append(el("p", { className: "hit-photo-missing", text, testid: `hit-${key}-state` }));
    if (ref && ref.state === "not_uploaded") {
      const ask = el("button", { text: "Ask the node for it", className: "btn btn-small",
        testid: `hit-${key}-request` });
      ask.type = "button";
      ask.tabIndex = hit.event_id === current ? 0 : -1;
      ask.addEventListener("click", () => requestFile(hit.event_id, ref.sha256));
      box.append(ask);
    }
    return box;
  }

  /* The crop beside the enrolment photos (and the frame below): words until "Show photos". */
  function renderPhotos(hit) {
    const shown = photos.get(hit.event_id) || {};
    const pair = el("div", { className: "hit-photos", testid: "hit-photos" });
    const where = `${hit.node_id} camera ${hit.camera_id}, ${when(hit.ts)}`;
    pair.append(evidenceFigure(hit, hit.crop, {
      key: "crop", caption: "Captured by the camera", url: shown.crop, error: shown.cropError,
      alt: `Crop captured by ${where}`,
    }));
    if (hit.subject === "person") {
      const enrolBox = el("figure", { className: "hit-figure", testid: "hit-enrolment-figure" });
      enrolBox.append(el("figcaption", { text: "Enrolment photo on the list" }));
      if (shown.enrolment && shown.enrolment.length) {
        shown.enrolment.forEach((url, i) => picture(enrolBox, url,
          `Enrolment photo ${i + 1} of ${shown.enrolment.length} of the listed person`,
          "hit-enrolment-img"));
      } else {
        enrolBox.append(el("p", {
          className: "hit-photo-missing", testid: "hit-enrolment-state",
          text: shown.viewedFor ? shown.enrolmentError || "This entry has no enrolment photo."
            : "“Show photos” shows it (the view is recorded).",
        }));
      }
      pair.append(enrolBox);
    }
    if (hit.frame) {
      pair.append(evidenceFigure(hit, hit.frame, {
        key: "frame", caption: "The frame it came from", url: shown.frame, error: shown.frameError,
        alt: `Whole frame captured by ${where}`,
      }));
    }
    if (shown.viewed) {
      pair.append(el("p", { className: "hint hit-photos-note",
        text: `These views were recorded for ${shown.viewedFor}, on alert ${hit.alert ? hit.alert.id : "–"}.` }));
    }
    return pair;
  }

  function setCurrent(eventId, focus) {
    current = hits.has(eventId) ? eventId : null;
    for (const [id, entry] of hits) {
      const on = id === current;
      entry.item.tabIndex = on ? 0 : -1;
      for (const button of entry.item.querySelectorAll("button")) {
        button.tabIndex = on ? 0 : -1;
      }
    }
    if (focus && current) {
      hits.get(current).item.focus();
    }
  }

  function renderFigures(figures) {
    const rows = Object.entries(figures.by_watchlist || {}).sort(([a], [b]) => a.localeCompare(b));
    figureRows.replaceChildren(...rows.map(([name, fig]) => {
      const row = el("tr", { testid: "figure-row" });
      row.dataset.watchlist = name;
      const rate = fig.false_accept_rate;
      for (const value of [name, fig.confirmed, fig.rejected, fig.pending,
        rate === null ? "–" : `${Math.round(rate * 100)} %`]) {
        row.append(el("td", { text: String(value) }));
      }
      return row;
    }));
  }

  // ------------------------------------------------------------ loading

  async function load() {
    if (!showPurpose()) {
      return;
    }
    let page;
    try {
      page = await viewApi("/watchlist-hits/queue?decision=pending");
    } catch (err) {
      if (err.status !== 401) {
        NB.say(err.status === 403
          ? "Your role cannot view watchlist hits (operators and admins can)."
          : `Could not load the hits: ${err.message}`, { kind: "error" });
      }
      return;
    }
    const focused = list.contains(document.activeElement) ? current : null;
    hits.clear();
    list.replaceChildren(...page.data.map((hit) => {
      const item = renderHit(hit);
      hits.set(hit.event_id, { hit, item });
      return item;
    }));
    count.textContent = String(page.count);
    empty.hidden = page.count > 0;
    empty.textContent = "No hit is waiting.";
    const keep = hits.has(current) ? current : (page.data[0] || {}).event_id;
    setCurrent(keep, Boolean(focused));
    loadFigures();
  }

  async function loadFigures() {
    try {
      renderFigures(await NB.api("/watchlist-hits/false-accepts"));
    } catch (_err) {
      /* the queue's own error already says why */
    }
  }

  function reloadSoon() {
    window.clearTimeout(reloadTimer);
    reloadTimer = window.setTimeout(load, RELOAD_DEBOUNCE_MS);
  }

  // ------------------------------------------------------------ actions

  async function showEntry(eventId) {
    const entry = hits.get(eventId);
    if (!entry) {
      return null;
    }
    let answer;
    try {
      answer = await viewApi(`/watchlist-hits/${encodeURIComponent(eventId)}/entry`);
    } catch (err) {
      if (err.status !== 401) {
        NB.say(`Could not show the list entry: ${err.message}`, { kind: "error" });
      }
      return null;
    }
    answer.viewedFor = purpose();
    entries.set(eventId, answer);
    // The queue may have been drawn again while the call was out: fill the card shown now.
    const shown = hits.get(eventId);
    if (shown) {
      fillEntry(shown.item.querySelector("[data-testid=hit-entry]"), answer);
    }
    return answer;
  }

  /* Redraw one card in place (after its pictures arrived), keeping the focus on it. */
  function redraw(eventId) {
    const shown = hits.get(eventId);
    if (!shown) {
      return;
    }
    const hadFocus = shown.item.contains(document.activeElement);
    const item = renderHit(shown.hit);
    shown.item.replaceWith(item);
    hits.set(eventId, { hit: shown.hit, item });
    setCurrent(current, false);
    if (hadFocus) {
      item.focus();
    }
  }

  async function showPhotos(eventId) {
    const entry = hits.get(eventId);
    if (!entry) {
      return;
    }
    const { hit } = entry;
    const alertId = hit.alert ? hit.alert.id : "";
    const result = {
      crop: null, cropError: "", frame: null, frameError: "", enrolment: [], enrolmentError: "",
      viewedFor: purpose(), viewed: 0,
    };
    const query = alertId ? `?alert_id=${encodeURIComponent(alertId)}` : "";
    for (const key of ["crop", "frame"]) {
      const ref = hit[key];
      if (!ref || ref.state !== "stored") {
        continue;
      }
      try {
        result[key] = await viewImage(`/evidence/${encodeURIComponent(ref.sha256)}/file${query}`);
        result.viewed += 1;
      } catch (err) {
        if (err.status === 401 || err.status === 428) {
          return;
        }
        result[`${key}Error`] = `Not shown: ${err.message}`;
      }
    }
    if (hit.subject === "person") {
      const answer = entries.get(eventId) && entries.get(eventId).viewedFor === purpose()
        ? entries.get(eventId) : await showEntry(eventId);
      if (!answer) {
        return;
      }
      const shas = answer.entry ? answer.entry.photos || [] : [];
      for (const photo of shas) {
        try {
          result.enrolment.push(await viewImage(
            `/watchlist-hits/${encodeURIComponent(eventId)}/photos/${encodeURIComponent(photo.sha256)}`));
          result.viewed += 1;
        } catch (err) {
          if (err.status === 401 || err.status === 428) {
            return;
          }
          result.enrolmentError = `Not shown: ${err.message}`;
        }
      }
      if (!answer.entry) {
        result.enrolmentError = answer.entry_removed
          ? "The entry was removed from the list since this hit." : "The entry is not on this server.";
      }
    }
    photos.set(eventId, result);
    redraw(eventId);
  }

  async function requestFile(eventId, sha256) {
    const entry = hits.get(eventId);
    if (!entry) {
      return;
    }
    try {
      await NB.api("/evidence/requests", {
        method: "POST",
        headers: { "X-Purpose": purpose() },
        json: { sha256, node_id: entry.hit.node_id },
      });
      NB.say(`Asked ${entry.hit.node_id} for the file: it uploads it at its next poll.`);
    } catch (err) {
      NB.say(`Could not ask the node: ${err.message}`, { kind: "error" });
      return;
    }
    await load();
  }

  function fillEntry(box, answer) {
    const dl = el("dl", { className: "hit-facts" });
    if (answer.entry && answer.entry.kind === "person") {
      const count = (answer.entry.photos || []).length;
      fact(dl, "Listed person", `${count} enrolment photo${count === 1 ? "" : "s"}`, "entry-person");
      fact(dl, "Note", answer.entry.note, "entry-note");
      fact(dl, "Added", when(answer.entry.created_at));
    } else if (answer.entry) {
      fact(dl, "Listed plate", plateKey(answer.entry.plate, answer.differs_at, "entry-plate"));
      fact(dl, "Note", answer.entry.note, "entry-note");
      fact(dl, "Added", when(answer.entry.created_at));
    } else {
      fact(dl, "Entry", answer.entry_removed
        ? "removed from the list since this hit" : "not on this server", "entry-note");
    }
    if (answer.watchlist) {
      fact(dl, "List purpose", answer.watchlist.purpose);
      fact(dl, "Owner", answer.watchlist.owner_agency, "entry-owner");
      fact(dl, "List version", `${answer.watchlist.version} (hit on ${answer.watchlist.hit_version})`);
      fact(dl, "Expires", when(answer.watchlist.expires_at));
    }
    const note = el("p", { className: "hint", text: `This view was recorded for ${answer.viewedFor}.` });
    box.replaceChildren(el("h4", { text: "List entry" }), dl, note);
    box.hidden = false;
  }

  function decide(eventId, decision) {
    const entry = hits.get(eventId);
    if (!entry) {
      return;
    }
    const { hit } = entry;
    pendingDecision = { eventId, decision };
    const confirming = decision === "confirmed";
    document.getElementById("decide-title").textContent = confirming
      ? "Confirm this hit" : "Reject this hit";
    const what = hit.subject === "person"
      ? `Face on ${hit.node_id} camera ${hit.camera_id} against the listed person` +
        (hit.score !== null && hit.score !== undefined ? ` (score ${hit.score.toFixed(2)})` : "")
      : `Read ${hit.plate} against listed ${hit.listed} (${hit.match})`;
    document.getElementById("decide-text").textContent = confirming
      ? `${what}. Confirming lets the alert be dispatched.`
      : `${what}. Rejecting closes the alert as a false alarm and counts as a false accept.`;
    const submit = document.getElementById("decide-submit");
    submit.textContent = confirming ? "Confirm hit" : "Reject hit";
    submit.className = confirming ? "btn btn-primary" : "btn btn-warn";
    decideReason.value = "";
    decideError.hidden = true;
    dialog.showModal();
    decideReason.focus();
  }

  async function sendDecision(note) {
    const { eventId, decision } = pendingDecision;
    pendingDecision = null;
    dialog.close();
    const entry = hits.get(eventId);
    try {
      await NB.api(`/watchlist-hits/${encodeURIComponent(eventId)}/decision`, {
        method: "POST",
        json: { decision, note },
      });
      const alertId = entry && entry.hit.alert ? entry.hit.alert.id : "";
      NB.say(decision === "confirmed"
        ? `Hit confirmed. Alert ${alertId} may now be dispatched from the alert queue.`
        : `Hit rejected. Alert ${alertId} was closed as a false alarm.`);
    } catch (err) {
      NB.say(`Decision refused: ${err.message}`, { kind: "error" });
    }
    await load();
    if (current) {
      hits.get(current).item.focus();
    } else {
      document.getElementById("main").focus();
    }
  }

  async function dispatch(eventId) {
    const entry = hits.get(eventId);
    if (!entry || !entry.hit.alert) {
      return;
    }
    try {
      await NB.api(`/alerts/${encodeURIComponent(entry.hit.alert.id)}/transitions`, {
        method: "POST",
        json: { to: "dispatched", note: "dispatched from the watchlist-hit page" },
      });
      NB.say(`Alert ${entry.hit.alert.id} dispatched.`);
    } catch (err) {
      NB.say(`Dispatch refused: ${err.message}`, { kind: "error" });
    }
    await load();
  }

  // ------------------------------------------------------------ wiring

  decideForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const note = decideReason.value.trim();
    if (note.length < 3) {
      decideError.hidden = false;
      decideReason.focus();
      return;
    }
    sendDecision(note);
  });
  decideReason.addEventListener("input", () => {
    decideError.hidden = true;
  });
  document.getElementById("decide-cancel").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    if (pendingDecision) {
      const back = hits.get(pendingDecision.eventId);
      pendingDecision = null;
      if (back) {
        back.item.focus();
      }
    }
  });

  list.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || !current) {
      return;
    }
    const ids = [...hits.keys()];
    const at = ids.indexOf(current);
    const onItem = event.target === hits.get(current).item;
    const key = event.key;
    let next = null;
    if (key === "ArrowDown" || key === "j") {
      next = ids[Math.min(ids.length - 1, at + 1)];
    } else if (key === "ArrowUp" || key === "k") {
      next = ids[Math.max(0, at - 1)];
    } else if (key === "Home") {
      next = ids[0];
    } else if (key === "End") {
      next = ids[ids.length - 1];
    } else if (onItem && (key === "e" || key === "E")) {
      showEntry(current);
    } else if (onItem && (key === "p" || key === "P")) {
      showPhotos(current);
    } else if (onItem && (key === "c" || key === "C")) {
      decide(current, "confirmed");
    } else if (onItem && (key === "r" || key === "R")) {
      decide(current, "rejected");
    } else if (onItem && (key === "d" || key === "D")) {
      dispatch(current);
    } else {
      return;
    }
    event.preventDefault();
    if (next) {
      setCurrent(next, true);
    }
  });

  purposeForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const kind = document.getElementById("purpose-kind").value;
    const reference = document.getElementById("purpose-ref").value.trim();
    if (!reference) {
      purposeError.textContent = "Give the case or FIR number, the alert id or a note.";
      purposeError.hidden = false;
      return;
    }
    purposeError.hidden = true;
    sessionStorage.setItem(
      PURPOSE_KEY,
      JSON.stringify({ token: (NB.token() || "").slice(-16), purpose: `${kind}:${reference}` }),
    );
    purposeForm.reset();
    load();
  });
  document.getElementById("purpose-change").addEventListener("click", forgetPurpose);

  /* The feed is scoped by the server: a hit elsewhere never arrives here. */
  NBLayout.onFeed((item) => {
    if (item && item.alert && item.alert.type === "watchlist_hit") {
      reloadSoon();
    }
  });

  load();
})();
