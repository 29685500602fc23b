/*
 * The power page: the fleet's sites at risk tonight (GET /power/overview) and
 * one node's 48-hour chart, drawn as SVG by the server
 * (GET /power/nodes/{id}/chart.svg). The chart is fetched with the bearer
 * token and inserted as an SVG element parsed from the server's document;
 * it carries no script and no style attributes, so the page's strict
 * Content-Security-Policy holds. Table values are written with textContent.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const REFRESH_MS = 30000;
  const rows = document.getElementById("power-rows");
  const noPower = document.getElementById("no-power");
  const atRiskCount = document.getElementById("at-risk-count");
  const summary = document.getElementById("power-summary");
  const atRiskOnly = document.getElementById("at-risk-only");
  const chart = document.getElementById("power-chart");
  const chartNode = document.getElementById("chart-node");
  const chartHint = document.getElementById("chart-hint");
  let selected = new URLSearchParams(window.location.search).get("node");

  document.getElementById("whoami").textContent = NB.user();
  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));
  document.getElementById("refresh").addEventListener("click", () => refresh());
  atRiskOnly.addEventListener("change", () => loadOverview());

  function percent(value) {
    return value === null || value === undefined ? "—" : `${Math.round(value * 100)}%`;
  }

  function hours(value) {
    return value === null || value === undefined ? "—" : `${value.toFixed(1)} h`;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) {
      td.className = className;
      td.dataset.testid = `power-${className}`;
    }
    row.append(td);
    return td;
  }

  function renderRow(item) {
    const row = document.createElement("tr");
    row.dataset.testid = "power-row";
    row.dataset.nodeId = item.node_id;
    row.dataset.atRisk = String(item.at_risk_tonight);
    row.dataset.belowTarget = String(item.below_target);
    row.setAttribute("aria-selected", String(item.node_id === selected));
    const first = document.createElement("td");
    const link = document.createElement("button");
    link.type = "button";
    link.className = "node-link";
    link.dataset.testid = "power-node";
    link.textContent = item.node_id;
    link.setAttribute("aria-label", `Show the 48-hour power chart of ${item.node_id}`);
    first.append(link);
    row.append(first);
    cell(row, [item.site_id, item.district].filter(Boolean).join(" "), "place");
    cell(row, percent(item.battery_soc), "soc");
    cell(row, hours(item.autonomy_h), "autonomy");
    cell(row, `${item.autonomy_target_h} h`, "target");
    cell(row, hours(item.autonomy_at_sunset_h), "sunset");
    cell(row, hours(item.hours_until_sunrise), "sunrise");
    cell(row, item.policy_step === null ? "—" : String(item.policy_step), "step");
    const supply = item.mains_present ? "mains" : "battery";
    cell(row, item.online ? supply : `${supply}, offline`, "supply");
    cell(row, item.reason, "why");
    row.addEventListener("click", () => showChart(item.node_id));
    return row;
  }

  async function loadOverview() {
    let overview;
    try {
      const only = atRiskOnly.checked ? "true" : "false";
      overview = await NB.api(`/power/overview?at_risk_only=${only}`);
    } catch (err) {
      NB.say(`Power overview failed: ${err.message}`, { kind: "error" });
      return;
    }
    rows.replaceChildren(...overview.data.map(renderRow));
    atRiskCount.textContent = String(overview.at_risk);
    summary.textContent =
      `${overview.at_risk} of ${overview.count} sites will not last until sunrise; ` +
      `${overview.below_target} below their autonomy target.`;
    noPower.hidden = overview.data.length > 0;
    noPower.textContent = atRiskOnly.checked ? "No node at risk tonight." : "No node reports power.";
    if (!selected && overview.data.length) {
      showChart(overview.data[0].node_id);
    }
  }

  async function showChart(nodeId) {
    selected = nodeId;
    for (const row of rows.children) {
      row.setAttribute("aria-selected", String(row.dataset.nodeId === nodeId));
    }
    chartNode.textContent = nodeId;
    let response;
    try {
      response = await fetch(
        `${NB.apiBase}/power/nodes/${encodeURIComponent(nodeId)}/chart.svg?hours=48`,
        { headers: { Authorization: `Bearer ${NB.token()}`, Accept: "image/svg+xml" } },
      );
    } catch (_err) {
      NB.say("The fleet server cannot be reached.", { kind: "error" });
      return;
    }
    if (response.status === 401) {
      NB.signOut("expired");
      return;
    }
    if (!response.ok) {
      NB.say(`Chart of ${nodeId} failed (HTTP ${response.status})`, { kind: "error" });
      return;
    }
    const doc = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
    const svg = doc.documentElement;
    if (svg.nodeName !== "svg") {
      NB.say(`Chart of ${nodeId} could not be read`, { kind: "error" });
      return;
    }
    chart.replaceChildren(document.importNode(svg, true));
    chart.dataset.nodeId = nodeId;
    chartHint.hidden = true;
  }

  function refresh() {
    loadOverview();
    if (selected) {
      showChart(selected);
    }
  }

  refresh();
  window.setInterval(refresh, REFRESH_MS);
})();
