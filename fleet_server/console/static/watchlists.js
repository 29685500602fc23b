/*
 * The watchlist page: the lists in the user's scope with their lagging nodes,
 * a list's entries and enrolment photos, and (admins) adding entries,
 * enrolling a photo and delivering the list.
 *
 * Viewing a list needs a stated purpose (X-Purpose: case, FIR, alert or
 * note), asked once per session (kept with the token it was given under, so
 * a new sign-in asks again) and sent with every view; the server records
 * each. A purpose the server refuses is forgotten and asked again.
 *
 * An enrolment photo goes to the server as it is; the answer is the quality
 * figures of an accepted photo, or the refusal's reason (no face, several
 * faces, too small, blurred, pose, not an image) with the server's sentence
 * saying what is wrong — shown in words and a mark, never by colour alone.
 * The admin forms are hidden from other roles as a courtesy; the API
 * answers them 403, and the page shows that answer.
 * Everything from the server is written with textContent.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const PURPOSE_KEY = "nb.watchlistPurpose";
  const MAX_PHOTO_LOOKUPS = 50;
  const REASONS = {
    no_face: "No face found",
    several_faces: "More than one face",
    too_small: "The face is too small",
    blurred: "The photo is too blurred",
    pose: "The face is not frontal",
    not_an_image: "Not an image",
  };
  const purposeForm = document.getElementById("purpose-form");
  const purposeShown = document.getElementById("purpose-shown");
  const purposeError = document.getElementById("purpose-error");
  const lists = document.getElementById("lists");
  const listCount = document.getElementById("list-count");
  const listsEmpty = document.getElementById("lists-empty");
  const detail = document.getElementById("detail");
  const entryRows = document.getElementById("entry-rows");
  const adminTools = document.querySelector("[data-testid=admin-tools]");
  const photoEntry = document.getElementById("photo-entry");
  const verdict = document.getElementById("photo-verdict");
  const deliverResult = document.getElementById("deliver-result");
  let openName = null;

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
      lists.replaceChildren();
      listCount.textContent = "0";
      listsEmpty.hidden = false;
      listsEmpty.textContent = "State a purpose to see the lists.";
      detail.hidden = true;
      openName = null;
    }
    return stated;
  }

  function forgetPurpose() {
    sessionStorage.removeItem(PURPOSE_KEY);
    showPurpose();
    document.getElementById("purpose-ref").focus();
  }

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

  // ------------------------------------------------------------ rendering

  const el = NB.el;

  function when(iso) {
    return iso ? `${iso.slice(0, 16).replace("T", " ")} UTC` : "";
  }

  function facts(pairs) {
    const dl = el("dl", { className: "wl-facts" });
    for (const [label, value, testid] of pairs) {
      const dd = el("dd", { testid });
      if (value instanceof Node) {
        dd.append(value);
      } else {
        dd.textContent = value;
      }
      dl.append(el("dt", { text: label }), dd);
    }
    return dl;
  }

  function scopeText(wl) {
    const parts = [];
    if (wl.districts && wl.districts.length) {
      parts.push(`districts ${wl.districts.join(", ")}`);
    }
    if (wl.sites && wl.sites.length) {
      parts.push(`sites ${wl.sites.join(", ")}`);
    }
    return parts.length ? parts.join("; ") : "every district";
  }

  function lagText(lag) {
    if (!lag.count) {
      return `Every node in scope holds version ${lag.current}`;
    }
    const names = lag.data
      .slice(0, 10)
      .map((n) => {
        if (n.key_renewed) {
          return `${n.node_id} (key renewed: deliver again)`;
        }
        return `${n.node_id} (${n.held === null ? "none" : `v${n.held}`})`;
      })
      .join(", ");
    const more = lag.count > 10 ? ` and ${lag.count - 10} more` : "";
    return `${lag.count} node(s) need version ${lag.current}: ${names}${more}`;
  }

  async function fillLag(name, target) {
    try {
      const lag = await NB.api(`/watchlists/${encodeURIComponent(name)}/lag`);
      target.textContent = lagText(lag);
      target.dataset.lagging = lag.count ? "true" : "false";
    } catch (err) {
      target.textContent = `Lag not known: ${err.message}`;
    }
  }

  function listCard(wl) {
    const item = el("li", { className: "wl-card", testid: "watchlist" });
    item.dataset.name = wl.name;
    const expired = Date.parse(wl.expires_at) <= Date.now();
    const lag = el("span", { className: "wl-lag", testid: "lag", text: "…" });
    item.append(
      el("h3", { text: wl.name }),
      facts([
        ["Category", wl.category.replace(/_/g, " "), "category"],
        ["Purpose", wl.purpose, "purpose"],
        ["Agency", wl.owner_agency],
        ["Scope", scopeText(wl), "scope"],
        ["Expires", `${when(wl.expires_at)}${expired ? " (expired)" : ""}`, "expires"],
        ["Version", String(wl.version), "version"],
        ["Nodes", lag],
      ]),
    );
    const open = el("button", { text: "Open entries", className: "btn btn-small", testid: "open" });
    open.type = "button";
    open.setAttribute("aria-label", `Open the entries of ${wl.name}`);
    open.addEventListener("click", () => openList(wl.name).catch(showError));
    item.append(open);
    fillLag(wl.name, lag);
    return item;
  }

  function showError(err) {
    if (err && err.status !== 401) {
      NB.say(err.message || String(err), { kind: "error" });
    }
  }

  async function load() {
    if (!showPurpose()) {
      return;
    }
    const answer = await viewApi("/watchlists");
    lists.replaceChildren(...answer.data.map(listCard));
    listCount.textContent = String(answer.count);
    listsEmpty.hidden = answer.count > 0;
    listsEmpty.textContent = "No watchlist is active in your scope.";
    for (const card of lists.children) {
      card.setAttribute("aria-current", String(card.dataset.name === openName));
    }
    if (openName) {
      await openList(openName);
    }
  }

  async function photoCell(name, entry) {
    const cell = el("td", { testid: "entry-photos" });
    if (entry.kind !== "person") {
      cell.textContent = "–";
      return cell;
    }
    cell.textContent = "…";
    try {
      const photos = await viewApi(
        `/watchlists/${encodeURIComponent(name)}/entries/${encodeURIComponent(entry.id)}/photos`,
      );
      cell.replaceChildren();
      if (!photos.count) {
        cell.textContent = "none yet: not matched";
      }
      for (const p of photos.data) {
        const line = el("div", { className: "wl-photo" });
        line.append(`${p.model} · `, el("span", { className: "wl-sha", text: p.sha256.slice(0, 16) }));
        const show = el("button", { text: "Show photo", className: "btn btn-small", testid: "show-photo" });
        show.type = "button";
        show.addEventListener("click", () => showPhoto(name, p.sha256, line, show));
        line.append(" ", show);
        cell.append(line);
      }
    } catch (err) {
      cell.textContent = `not shown: ${err.message}`;
    }
    return cell;
  }

  /* The enrolment photo itself, on request (each view is recorded with the purpose):
   * fetched with the token, shown as a data: URL (the console's CSP allows no blob:). */
  async function showPhoto(name, sha256, line, button) {
    const stated = purpose();
    if (!stated) {
      return;
    }
    button.disabled = true;
    try {
      const response = await fetch(
        `${NB.apiBase}/watchlists/${encodeURIComponent(name)}/photos/${encodeURIComponent(sha256)}`,
        { headers: { Authorization: `Bearer ${NB.token() || ""}`, "X-Purpose": stated } },
      );
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new NB.ApiError(response.status, photoError(body, response.status));
      }
      const blob = await response.blob();
      const url = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(new Error("the photo could not be read"));
        reader.readAsDataURL(blob);
      });
      const img = el("img", { className: "wl-thumb", testid: "photo" });
      img.alt = `Enrolment photo ${sha256.slice(0, 12)}`;
      img.src = url;
      button.replaceWith(img);
    } catch (err) {
      button.disabled = false;
      showError(err);
    }
  }

  function photoError(body, status) {
    return body && typeof body.detail === "string" ? body.detail : `HTTP ${status}`;
  }

  async function openList(name) {
    const wl = await viewApi(`/watchlists/${encodeURIComponent(name)}`);
    openName = name;
    for (const card of lists.children) {
      card.setAttribute("aria-current", String(card.dataset.name === name));
    }
    detail.hidden = false;
    document.getElementById("detail-heading").textContent = `${wl.name} · version ${wl.version}`;
    document.getElementById("detail-facts").textContent =
      `${wl.category.replace(/_/g, " ")} · ${wl.purpose} · ${scopeText(wl)} · ` +
      `expires ${when(wl.expires_at)}`;
    const persons = wl.entries.filter((e) => e.kind === "person");
    const rows = [];
    let lookups = 0;
    for (const entry of wl.entries) {
      const row = el("tr", { testid: "entry" });
      row.dataset.entryId = entry.id;
      row.dataset.kind = entry.kind;
      const label = entry.kind === "plate" ? entry.plate_key : `person ${entry.id.slice(-6)}`;
      row.append(
        el("td", { text: entry.kind }),
        el("td", { text: label, testid: "entry-key" }),
        el("td", { text: entry.note || "" }),
      );
      if (entry.kind === "person" && lookups < MAX_PHOTO_LOOKUPS) {
        lookups += 1;
        row.append(await photoCell(name, entry));
      } else {
        row.append(el("td", { text: entry.kind === "person" ? "not looked up" : "–" }));
      }
      rows.push(row);
    }
    entryRows.replaceChildren(...rows);
    if (!rows.length) {
      const row = el("tr");
      const cell = el("td", { text: "No entries yet." });
      cell.colSpan = 4;
      row.append(cell);
      entryRows.append(row);
    }
    const chosen = photoEntry.value;
    photoEntry.replaceChildren(
      ...persons.map((e) => {
        const option = el("option", { text: `${e.note || "person"} (${e.id.slice(-6)})` });
        option.value = e.id;
        return option;
      }),
    );
    if (persons.some((e) => e.id === chosen)) {
      photoEntry.value = chosen;
    }
  }

  // ------------------------------------------------------------ admin actions

  function listPath(suffix) {
    return `/watchlists/${encodeURIComponent(openName)}${suffix}`;
  }

  document.getElementById("plate-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const plate = document.getElementById("plate-text").value.trim();
    const note = document.getElementById("plate-note").value.trim();
    if (!plate) {
      NB.say("Give the plate to add.", { kind: "error" });
      return;
    }
    try {
      const made = await NB.api(listPath("/entries"), {
        method: "POST",
        json: { kind: "plate", plate, note: note || null },
      });
      event.target.reset();
      NB.say(`Added ${made.plate_key}; the list is now version ${made.version}.`);
      await load();
    } catch (err) {
      showError(err);
    }
  });

  document.getElementById("person-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const note = document.getElementById("person-note").value.trim();
    if (!note) {
      NB.say("Say who the person is and why they are listed.", { kind: "error" });
      return;
    }
    try {
      const made = await NB.api(listPath("/entries"), {
        method: "POST",
        json: { kind: "person", note },
      });
      event.target.reset();
      NB.say(`Added the person; now enrol a photo. The list is version ${made.version}.`);
      await load();
      photoEntry.value = made.id;
    } catch (err) {
      showError(err);
    }
  });

  function showVerdict(kind, title, text, quality) {
    verdict.hidden = false;
    verdict.dataset.verdict = kind;
    const lines = [el("strong", { text: title, testid: "verdict-title" })];
    if (text) {
      lines.push(el("p", { text, testid: "verdict-detail" }));
    }
    const figures = Object.entries(quality || {});
    if (figures.length) {
      const ul = el("ul", { testid: "verdict-quality" });
      for (const [key, value] of figures) {
        const shown = typeof value === "number" ? String(Math.round(value * 10) / 10) : String(value);
        ul.append(el("li", { text: `${key.replace(/_/g, " ")}: ${shown}` }));
      }
      lines.push(ul);
    }
    verdict.replaceChildren(...lines);
  }

  /* Multipart upload: NB.api speaks JSON and forms, so this one call is by hand. */
  async function uploadPhoto(entryId, file) {
    const data = new FormData();
    data.append("photo", file, file.name || "photo");
    const path = listPath(`/entries/${encodeURIComponent(entryId)}/photos`);
    let response;
    try {
      response = await fetch(`${NB.apiBase}${path}`, {
        method: "POST",
        headers: { Accept: "application/json", Authorization: `Bearer ${NB.token() || ""}` },
        body: data,
      });
    } catch (_err) {
      throw new NB.ApiError(0, "The fleet server cannot be reached. Check the network and try again.");
    }
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) {
      NB.signOut("expired");
    }
    return { status: response.status, body };
  }

  document.getElementById("photo-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const entryId = photoEntry.value;
    const file = document.getElementById("photo-file").files[0];
    if (!entryId || !file) {
      showVerdict("refused", "Choose a person and a photo first.", "", null);
      return;
    }
    showVerdict("checking", "Checking the photo…", "", null);
    try {
      const { status, body } = await uploadPhoto(entryId, file);
      const detailBody = body && body.detail;
      if (status === 201) {
        showVerdict(
          "accepted",
          "Accepted: enrolled",
          `Template made with ${body.model}; the list is now version ${body.version}. ` +
            "Deliver the list for nodes to match this person.",
          body.quality,
        );
        document.getElementById("photo-file").value = "";
        await load();
      } else if (detailBody && typeof detailBody === "object" && detailBody.reason) {
        const title = REASONS[detailBody.reason] || detailBody.reason;
        showVerdict("refused", `Refused: ${title} (${detailBody.reason})`, detailBody.detail,
                    detailBody.quality);
      } else {
        const text = typeof detailBody === "string" ? detailBody : `HTTP ${status}`;
        showVerdict("refused", status === 403 ? "Not allowed" : "Refused", text, null);
      }
    } catch (err) {
      showVerdict("refused", "Not sent", err.message, null);
    }
  });

  document.getElementById("deliver").addEventListener("click", async () => {
    deliverResult.hidden = false;
    deliverResult.textContent = "Signing and sending…";
    try {
      const done = await NB.api(listPath("/deliver"), { method: "POST" });
      const faces = done.persons_sealed
        ? `; ${done.persons_sealed} person(s) sealed for ${done.recipients} node key(s)`
        : "";
      const how = done.fetch ? ` (fetched over HTTPS, ${done.fetch.size} bytes)` : "";
      deliverResult.textContent =
        `Version ${done.version} sent to ${done.nodes.length} node(s)${how}${faces}.`;
      await load();
    } catch (err) {
      deliverResult.textContent = `Not delivered: ${err.message}`;
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
    load().catch(showError);
  });
  document.getElementById("purpose-change").addEventListener("click", forgetPurpose);

  NBLayout.me.then((me) => {
    adminTools.hidden = !(me && me.role === "admin");
  });

  load().catch(showError);
})();
