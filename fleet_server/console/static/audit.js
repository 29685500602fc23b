/*
 * The audit log page: an auditor (or a fleet admin) filters the log by actor,
 * action, object and time, checks the chain, and exports what they found
 * (GET /audit/records, /audit/verify, /audit/export).
 *
 * Read-only: the API has no way to change a record, and neither has this
 * page. Everything from the server is written with textContent. Times in the
 * filter are taken as UTC, the way the log stores them.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const PAGE = 50;
  const form = document.getElementById("audit-filter");
  const rows = document.getElementById("audit-rows");
  const count = document.getElementById("record-count");
  const pageInfo = document.getElementById("page-info");
  const newer = document.getElementById("newer");
  const older = document.getElementById("older");
  const chainStatus = document.getElementById("chain-status");
  const sections = ["audit-chain", "audit-search", "audit-results"].map((id) =>
    document.getElementById(id),
  );
  const refused = document.getElementById("audit-refused");
  const refusedText = document.getElementById("audit-refused-text");
  let offset = 0;

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));

  /* The filter as query parameters; a datetime-local value is UTC here. */
  function filterParams() {
    const params = new URLSearchParams();
    for (const name of ["actor", "action", "object"]) {
      const value = form.elements[name].value.trim();
      if (value) {
        params.set(name, value);
      }
    }
    for (const name of ["since", "until"]) {
      const value = form.elements[name].value;
      if (value) {
        params.set(name, `${value.length === 16 ? `${value}:00` : value}Z`);
      }
    }
    return params;
  }

  function showRefused(message) {
    refused.hidden = false;
    refusedText.textContent = message;
    for (const section of sections) {
      section.hidden = true;
    }
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) {
      td.className = className;
    }
    td.textContent = text;
    row.append(td);
    return td;
  }

  function render(record) {
    const row = document.createElement("tr");
    row.dataset.testid = "audit-row";
    row.dataset.seq = String(record.seq);
    row.dataset.action = record.action;
    cell(row, String(record.seq));
    const when = cell(row, record.at.slice(0, 19).replace("T", " "), "when");
    when.title = record.at;
    cell(row, record.actor);
    cell(row, record.action);
    cell(row, record.object);
    const detail = JSON.stringify(record.detail);
    cell(row, detail === "{}" ? "" : detail, "detail");
    const hash = cell(row, `${record.hash.slice(0, 12)}…`, "hash");
    hash.title = `hash ${record.hash}\nprevious ${record.prev_hash}`;
    return row;
  }

  async function load() {
    const params = filterParams();
    params.set("limit", String(PAGE));
    params.set("offset", String(offset));
    let page;
    try {
      page = await NB.api(`/audit/records?${params}`);
    } catch (err) {
      if (err.status === 403) {
        showRefused(err.message);
        return;
      }
      NB.say(err.message, { kind: "error" });
      return;
    }
    refused.hidden = true;
    for (const section of sections) {
      section.hidden = false;
    }
    rows.replaceChildren(...page.data.map(render));
    count.textContent = String(page.count);
    const last = Math.min(offset + page.data.length, page.count);
    pageInfo.textContent = page.count ? `${offset + 1}–${last} of ${page.count}` : "No records";
    newer.disabled = offset === 0;
    older.disabled = last >= page.count;
  }

  async function verify() {
    chainStatus.dataset.state = "checking";
    chainStatus.textContent = "Checking the chain…";
    try {
      const verdict = await NB.api("/audit/verify");
      chainStatus.dataset.state = verdict.ok ? "ok" : "broken";
      chainStatus.textContent = verdict.summary;
    } catch (err) {
      chainStatus.dataset.state = "unknown";
      chainStatus.textContent = "Not checked.";
      if (err.status !== 403) {
        NB.say(err.message, { kind: "error" });
      }
    }
  }

  /* The export needs the bearer token, so it is fetched and handed to the
   * browser as a file rather than opened as a plain link. */
  async function exportAs(format) {
    const params = filterParams();
    params.set("format", format);
    let response;
    try {
      response = await fetch(`${NB.apiBase}/audit/export?${params}`, {
        headers: { Authorization: `Bearer ${NB.token()}` },
      });
    } catch (_err) {
      NB.say("The fleet server cannot be reached.", { kind: "error" });
      return;
    }
    if (!response.ok) {
      NB.say(`The export was refused (HTTP ${response.status}).`, { kind: "error" });
      return;
    }
    const disposition = response.headers.get("Content-Disposition") || "";
    const match = /filename="([^"]+)"/.exec(disposition);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = match ? match[1] : `audit.${format}`;
    link.dataset.testid = "export-link";
    document.body.append(link);
    link.click();
    link.remove();
    window.setTimeout(() => URL.revokeObjectURL(url), 10000);
    NB.say(`Exported ${link.download}.`);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    offset = 0;
    load();
  });
  document.getElementById("clear").addEventListener("click", () => {
    form.reset();
    offset = 0;
    load();
  });
  newer.addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    load();
  });
  older.addEventListener("click", () => {
    offset += PAGE;
    load();
  });
  document.getElementById("verify").addEventListener("click", verify);
  document.getElementById("export-json").addEventListener("click", () => exportAs("json"));
  document.getElementById("export-csv").addEventListener("click", () => exportAs("csv"));

  load().then(() => {
    if (refused.hidden) {
      verify();
    }
  });
})();
