/*
 * Provisioning page: create enrollment tokens (the value is shown once and
 * never again — the server keeps only its hash), accept or reject nodes in
 * the manual queue, list node certificates with their expiry, revoke a node.
 *
 * Every value from the API is written with textContent. Refusals show the
 * server's own message and reason code.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const SOON_MS = 7 * 24 * 3600 * 1000;
  document.getElementById("whoami").textContent = NB.user();
  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));
  document.getElementById("refresh").addEventListener("click", () => refresh());

  function when(iso) {
    const millis = Date.parse(iso || "");
    return Number.isNaN(millis) ? "—" : new Date(millis).toLocaleString();
  }

  function td(row, text, testid) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (testid) {
      cell.dataset.testid = testid;
    }
    row.append(cell);
    return cell;
  }

  function button(label, testid, onClick, { warn = false, aria } = {}) {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = warn ? "btn btn-small btn-warn" : "btn btn-small btn-primary";
    btn.textContent = label;
    btn.dataset.testid = testid;
    if (aria) {
      btn.setAttribute("aria-label", aria);
    }
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      try {
        await onClick();
      } catch (err) {
        NB.say(`${label} refused: ${err.message}`, { kind: "error" });
      } finally {
        btn.disabled = false;
        refresh();
      }
    });
    return btn;
  }

  // ------------------------------------------------------------------ tokens

  const form = document.getElementById("token-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const hours = Number(document.getElementById("token-hours").value || "24");
    const body = {
      district: document.getElementById("token-district").value.trim() || null,
      site_id: document.getElementById("token-site").value.trim() || null,
      ttl_s: Math.round(hours * 3600),
      note: document.getElementById("token-note").value.trim(),
    };
    try {
      const made = await NB.api("/enrollment-tokens", { method: "POST", json: body });
      document.getElementById("token-value").textContent = made.token;
      document.getElementById("token-expiry").textContent = `valid until ${when(made.expires_at)}`;
      document.getElementById("token-once").hidden = false;
      NB.say("Enrollment token created.");
    } catch (err) {
      NB.say(`Token refused: ${err.message}`, { kind: "error" });
    }
  });

  document.getElementById("token-copy").addEventListener("click", async () => {
    const value = document.getElementById("token-value").textContent;
    try {
      await navigator.clipboard.writeText(value);
      NB.say("Token copied.");
    } catch (_err) {
      /* No clipboard (plain HTTP, permissions): select it for a manual copy. */
      const range = document.createRange();
      range.selectNodeContents(document.getElementById("token-value"));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      NB.say("Select-and-copy: the token is highlighted.");
    }
  });

  // ------------------------------------------------------------ accept queue

  async function loadPending() {
    const rows = document.getElementById("pending-rows");
    let page;
    try {
      page = await NB.api("/enrollment-requests?state=pending");
    } catch (err) {
      NB.say(`Cannot load the accept queue: ${err.message}`, { kind: "error" });
      return;
    }
    rows.replaceChildren();
    for (const req of page.data) {
      const row = document.createElement("tr");
      row.dataset.testid = "pending-row";
      row.dataset.requestId = req.id;
      row.dataset.nodeId = req.node_id;
      td(row, req.node_id, "pending-node");
      td(row, req.serial, "pending-serial");
      td(row, [req.site_id, req.district].filter((p) => p).join(" / ") || "—");
      td(row, `sha256:${req.key_sha256.slice(0, 16)}…`);
      td(row, when(req.created_at));
      const actions = td(row, "");
      actions.className = "actions";
      actions.append(
        button("Accept", "action-accept", () =>
          NB.api(`/enrollment-requests/${encodeURIComponent(req.id)}/accept`, { method: "POST" }),
          { aria: `Accept node ${req.node_id}` }),
        button("Reject", "action-reject", () =>
          NB.api(`/enrollment-requests/${encodeURIComponent(req.id)}/reject`, { method: "POST" }),
          { warn: true, aria: `Reject node ${req.node_id}` }),
      );
      rows.append(row);
    }
    document.getElementById("pending-count").textContent = String(page.count);
    document.getElementById("no-pending").hidden = page.data.length > 0;
  }

  // ------------------------------------------------------------ certificates

  async function loadCertificates() {
    const rows = document.getElementById("cert-rows");
    let page;
    try {
      page = await NB.api("/certificates");
    } catch (err) {
      NB.say(`Cannot load certificates: ${err.message}`, { kind: "error" });
      return;
    }
    rows.replaceChildren();
    for (const cert of page.data) {
      const row = document.createElement("tr");
      row.dataset.testid = "cert-row";
      row.dataset.nodeId = cert.node_id;
      row.dataset.serial = cert.serial;
      row.dataset.revoked = cert.revoked_at ? "true" : "false";
      if (cert.revoked_at) {
        row.className = "cert-revoked";
      }
      td(row, cert.node_id, "cert-node");
      td(row, cert.serial, "cert-serial");
      td(row, when(cert.issued_at));
      const expires = td(row, when(cert.not_after), "cert-expiry");
      const left = Date.parse(cert.not_after) - Date.now();
      if (!cert.revoked_at && left < SOON_MS) {
        expires.className = "expiry-soon";
      }
      const expired = left <= 0;
      td(row, cert.revoked_at ? "revoked" : expired ? "expired" : "valid", "cert-state");
      const action = td(row, "");
      if (!cert.revoked_at && !expired) {
        action.append(
          button("Revoke", "action-revoke", async () => {
            if (!window.confirm(`Revoke every certificate of ${cert.node_id}? It will be cut off.`)) {
              return;
            }
            await NB.api(`/nodes/${encodeURIComponent(cert.node_id)}/revoke`, {
              method: "POST",
              json: { reason: `revoked from the console by ${NB.user()}` },
            });
            NB.say(`${cert.node_id} revoked.`);
          }, { warn: true, aria: `Revoke node ${cert.node_id}` }),
        );
      }
      rows.append(row);
    }
    document.getElementById("no-certs").hidden = page.data.length > 0;
  }

  function refresh() {
    loadPending();
    loadCertificates();
  }

  refresh();
})();
