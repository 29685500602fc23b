/*
 * The evidence page: an alert's node-signed evidence files, the "Export
 * evidence" action, export approvals, and cases whose evidence is on legal
 * hold (docs/evidence.md).
 *
 * Everything goes through the scoped API: GET /evidence?alert_id= lists the
 * files (metadata only); viewing one sends the stated purpose (X-Purpose) and
 * is recorded; POST /evidence/exports asks for an export with that purpose;
 * an admin or auditor who did not ask approves it (POST …/decision); the one
 * who asked downloads the signed bundle (GET …/bundle). Cases: POST
 * /evidence/cases, attach the alert's files (…/items), release the hold
 * (…/release). A plate read's crop stays on its node until asked for (POST
 * /evidence/requests). Values from the server are written with textContent only.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const form = document.getElementById("ev-form");
  const rows = document.getElementById("ev-rows");
  const empty = document.getElementById("ev-empty");
  const exportRows = document.getElementById("ex-rows");
  const caseRows = document.getElementById("case-rows");
  const caseForm = document.getElementById("case-form");
  const view = document.getElementById("ev-view");
  let me = { username: NB.user(), role: "" };

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));

  function alertId() {
    return form.elements.alert.value.trim().toUpperCase();
  }

  function purpose() {
    return form.elements.purpose.value.trim();
  }

  function td(text, testid) {
    const cell = document.createElement("td");
    cell.textContent = text === null || text === undefined ? "—" : String(text);
    if (testid) {
      cell.dataset.testid = testid;
    }
    return cell;
  }

  function button(label, testid, onClick, { primary = false } = {}) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = primary ? "btn btn-small btn-primary" : "btn btn-small";
    b.textContent = label;
    b.dataset.testid = testid;
    b.addEventListener("click", onClick);
    return b;
  }

  function fail(err) {
    NB.say(err && err.message ? err.message : String(err), { kind: "error" });
  }

  async function viewFile(item) {
    if (!purpose()) {
      NB.say("State a purpose first: viewing evidence is recorded with it.", { kind: "error" });
      return;
    }
    const response = await fetch(`${NB.apiBase}/evidence/${item.sha256}/file`, {
      headers: { Authorization: `Bearer ${NB.token()}`, "X-Purpose": purpose() },
    });
    if (!response.ok) {
      NB.say(`The file could not be shown (HTTP ${response.status}).`, { kind: "error" });
      return;
    }
    const blob = await response.blob();
    const reader = new FileReader();
    reader.onload = () => {
      document.getElementById("ev-image").src = String(reader.result);
      document.getElementById("ev-caption").textContent =
        `${item.sha256} · ${item.node_id} ${item.camera_id || ""} · viewed for ${purpose()}`;
      view.hidden = false;
    };
    reader.readAsDataURL(blob);
  }

  async function loadEvidence() {
    const id = alertId();
    rows.replaceChildren();
    empty.hidden = true;
    if (!id) {
      return;
    }
    try {
      const page = await NB.api(`/evidence?alert_id=${encodeURIComponent(id)}`);
      for (const item of page.data) {
        const row = document.createElement("tr");
        row.dataset.testid = "ev-row";
        row.append(
          Object.assign(td(item.sha256, "ev-sha"), { className: "sha" }),
          td(item.data_class),
          td(`${item.node_id} ${item.camera_id || ""}`.trim()),
          td(item.captured_at),
          td(item.held ? `${item.state}, held` : item.state, "ev-state"),
        );
        const actions = document.createElement("td");
        if (item.state === "stored") {
          actions.append(button("View", "ev-view", () => viewFile(item).catch(fail)));
        }
        row.append(actions);
        rows.append(row);
      }
      empty.hidden = page.data.length > 0;
    } catch (err) {
      fail(err);
    }
  }

  async function requestExport() {
    const id = alertId();
    if (!id || !purpose()) {
      NB.say("An export needs the alert id and a stated purpose.", { kind: "error" });
      return;
    }
    try {
      const made = await NB.api("/evidence/exports", {
        method: "POST",
        json: { subject: `alert:${id}` },
        headers: { "X-Purpose": purpose() },
      });
      NB.say(
        made.state === "pending"
          ? "Export requested: it waits for a second user's approval."
          : "Export approved: download it below.",
      );
      await loadExports();
    } catch (err) {
      fail(err);
    }
  }

  async function decide(row, decision) {
    try {
      await NB.api(`/evidence/exports/${row.id}/decision`, {
        method: "POST",
        json: { decision, note: "" },
      });
      NB.say(`Export ${decision}.`);
      await loadExports();
    } catch (err) {
      fail(err);
    }
  }

  async function download(row) {
    const response = await fetch(`${NB.apiBase}/evidence/exports/${row.id}/bundle`, {
      headers: { Authorization: `Bearer ${NB.token()}` },
    });
    if (!response.ok) {
      NB.say(`The bundle could not be made (HTTP ${response.status}).`, { kind: "error" });
      return;
    }
    const blob = await response.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `evidence-${row.subject.replace(":", "-")}-${row.id}.zip`;
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    await loadExports();
  }

  async function loadExports() {
    try {
      const page = await NB.api("/evidence/exports");
      exportRows.replaceChildren();
      const approver = me.role === "admin" || me.role === "auditor";
      for (const row of page.data) {
        const tr = document.createElement("tr");
        tr.dataset.testid = "ex-row";
        tr.append(
          td(row.subject),
          td(row.purpose),
          td(row.requested_by),
          td(row.state, "ex-state"),
          td(row.approved_by),
        );
        const actions = document.createElement("td");
        if (row.state === "pending" && approver && row.requested_by !== me.username) {
          actions.append(
            button("Approve", "ex-approve", () => decide(row, "approved"), { primary: true }),
            button("Refuse", "ex-refuse", () => decide(row, "refused")),
          );
        }
        if ((row.state === "approved" || row.state === "exported")
            && row.requested_by === me.username) {
          actions.append(button("Download bundle", "ex-download", () => download(row).catch(fail)));
        }
        tr.append(actions);
        exportRows.append(tr);
      }
    } catch (err) {
      fail(err);
    }
  }

  async function loadCases() {
    try {
      const page = await NB.api("/evidence/cases");
      caseRows.replaceChildren();
      const releaser = me.role === "admin" || me.role === "auditor";
      for (const item of page.data) {
        const tr = document.createElement("tr");
        tr.dataset.testid = "case-row";
        tr.append(
          td(item.reference),
          td(item.district),
          td(item.items),
          td(item.state === "open" ? "held" : `released by ${item.released_by}`, "case-hold"),
        );
        const actions = document.createElement("td");
        if (item.state === "open" && releaser) {
          actions.append(button("Release hold", "case-release", () => release(item)));
        }
        tr.append(actions);
        caseRows.append(tr);
      }
    } catch (err) {
      fail(err);
    }
  }

  async function release(item) {
    const note = window.prompt(`Why is the hold on ${item.reference} released?`, "");
    if (!note || note.trim().length < 3) {
      NB.say("A release needs a reason (3 characters or more).", { kind: "error" });
      return;
    }
    try {
      await NB.api(`/evidence/cases/${item.id}/release`, {
        method: "POST",
        json: { note: note.trim() },
      });
      NB.say(`Hold on ${item.reference} released.`);
      await Promise.all([loadCases(), loadEvidence()]);
    } catch (err) {
      fail(err);
    }
  }

  async function openCase(event) {
    event.preventDefault();
    const reference = caseForm.elements.reference.value.trim();
    const district = caseForm.elements.district.value.trim();
    if (!reference) {
      NB.say("Give the case or FIR number.", { kind: "error" });
      return;
    }
    try {
      const made = await NB.api("/evidence/cases", {
        method: "POST",
        json: district ? { reference, district } : { reference },
      });
      if (alertId()) {
        await NB.api(`/evidence/cases/${made.id}/items`, {
          method: "POST",
          json: { alert_id: alertId() },
        });
      }
      NB.say(`Case ${reference} opened; its evidence is held.`);
      await Promise.all([loadCases(), loadEvidence()]);
    } catch (err) {
      fail(err);
    }
  }

  async function requestCrop(event) {
    event.preventDefault();
    const rq = document.getElementById("rq-form");
    const nodeId = rq.elements.node_id.value.trim();
    const sha = rq.elements.sha256.value.trim().toLowerCase();
    if (!nodeId || !/^[0-9a-f]{64}$/.test(sha) || !purpose()) {
      NB.say("Give the node, the crop's 64-character SHA-256 and a purpose.", { kind: "error" });
      return;
    }
    try {
      await NB.api("/evidence/requests", {
        method: "POST",
        json: { sha256: sha, node_id: nodeId },
        headers: { "X-Purpose": purpose() },
      });
      NB.say(`Asked ${nodeId} for the crop; it uploads at its next poll.`);
    } catch (err) {
      fail(err);
    }
  }

  document.getElementById("rq-form").addEventListener("submit", requestCrop);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    loadEvidence();
  });
  document.getElementById("ev-export").addEventListener("click", requestExport);
  caseForm.addEventListener("submit", openCase);

  const wanted = new URLSearchParams(window.location.search).get("alert");
  if (wanted) {
    form.elements.alert.value = wanted;
    form.elements.purpose.value = `alert:${wanted}`;
  }
  NB.api("/users/me")
    .then((user) => {
      me = { username: user.username, role: user.role };
    })
    .catch(fail)
    .finally(() => {
      loadEvidence();
      loadExports();
      loadCases();
    });
})();
