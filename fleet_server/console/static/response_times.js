/*
 * The response-time page: percentiles per district for a chosen period
 * (GET /response-times/report), two plots drawn by the server as SVG
 * (stage.svg: the target's stage per district; chain.svg: where the time
 * goes), the districts that miss the target, and a CSV export.
 *
 * The period is "the last N hours" from now; times shown are PKT, the
 * figures themselves are durations on the server's clock.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }
  const page = document.getElementById("main");
  const form = document.getElementById("period-form");
  const stageSelect = document.getElementById("target-stage");
  const pktFormat = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Karachi",
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  });
  const STAGES = [
    ["press_to_received", "press → received"],
    ["received_to_acknowledged", "received → acknowledged"],
    ["acknowledged_to_dispatched", "acknowledged → dispatched"],
    ["dispatched_to_on_scene", "dispatched → on scene"],
    ["on_scene_to_resolved", "on scene → resolved"],
    ["received_to_resolved", "received → resolved"],
  ];

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));
  stageSelect.replaceChildren(
    ...STAGES.map(([value, label]) => {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      option.selected = value === "received_to_acknowledged";
      return option;
    }),
  );

  function seconds(value) {
    if (value === null || value === undefined) {
      return "—";
    }
    if (value < 120) {
      return value < 10 ? `${value.toFixed(1)} s` : `${Math.round(value)} s`;
    }
    if (value < 7200) {
      return `${(value / 60).toFixed(1)} min`;
    }
    return `${(value / 3600).toFixed(1)} h`;
  }

  function query() {
    const params = new URLSearchParams();
    const period = document.getElementById("period").value;
    let since = null;
    const day = document.getElementById("since-date").value;
    if (period === "date" && day) {
      /* Midnight of that day in Pakistan (UTC+5, no daylight saving). */
      since = new Date(`${day}T00:00:00+05:00`);
      params.set("since", since.toISOString());
    } else if (period !== "all" && period !== "date") {
      since = new Date(Date.now() - Number(period) * 3600000);
      params.set("since", since.toISOString());
    }
    params.set("alert_type", document.getElementById("alert-type").value);
    return { params, since };
  }

  function targetParams(params) {
    const out = new URLSearchParams(params);
    out.set("target_stage", stageSelect.value);
    out.set("target_pct", document.getElementById("target-pct").value);
    out.set("target_s", document.getElementById("target-s").value || "15");
    return out;
  }

  async function authed(path, accept) {
    const response = await fetch(`${NB.apiBase}${path}`, {
      headers: { Authorization: `Bearer ${NB.token()}`, Accept: accept },
    });
    if (response.status === 401) {
      NB.signOut("expired");
      throw new Error("signed out");
    }
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    return response;
  }

  async function loadSvg(path, holder) {
    try {
      const response = await authed(path, "image/svg+xml");
      const doc = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
      if (doc.documentElement.nodeName === "svg") {
        holder.replaceChildren(document.importNode(doc.documentElement, true));
      }
    } catch (err) {
      NB.say(`A plot failed: ${err.message}`, { kind: "error" });
    }
  }

  function renderTable(report) {
    const head = document.createElement("tr");
    for (const label of ["District", "Alerts", ...STAGES.map(([, l]) => l), "Target"]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = label;
      head.append(th);
    }
    document.getElementById("response-head").replaceChildren(head);
    const verdicts = new Map(report.verdicts.map((v) => [v.district, v]));
    const rows = report.figures.data.map((d) => {
      const tr = document.createElement("tr");
      tr.dataset.testid = "response-row";
      tr.dataset.district = d.district;
      const verdict = verdicts.get(d.district);
      tr.dataset.verdict = verdict ? verdict.verdict : "no data";
      const cells = [d.district, String(d.alerts)];
      for (const [stage] of STAGES) {
        const s = d.stages[stage];
        cells.push(s && s.count ? `${seconds(s.p50_s)} / ${seconds(s.p90_s)} / ${seconds(s.p99_s)} (n=${s.count}${s.excluded ? `, ${s.excluded} excluded` : ""})` : "—");
      }
      cells.push(verdict ? `${verdict.verdict}${verdict.value_s !== null ? ` (${seconds(verdict.value_s)})` : ""}` : "—");
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    });
    document.getElementById("response-rows").replaceChildren(...rows);
  }

  async function load() {
    page.dataset.state = "loading";
    const { params, since } = query();
    const withTarget = targetParams(params);
    let report;
    try {
      report = await NB.api(`/response-times/report?${withTarget}`);
    } catch (err) {
      NB.say(`Response times failed: ${err.message}`, { kind: "error" });
      page.dataset.state = "error";
      return;
    }
    const now = pktFormat.format(new Date());
    document.getElementById("period-text").textContent = since
      ? `${report.figures.alert_type} alerts received ${pktFormat.format(since)} – ${now} PKT; test alerts left out.`
      : `All ${report.figures.alert_type} alerts up to ${now} PKT; test alerts left out.`;
    document.getElementById("target-text").textContent = `Target: ${report.target_text}.`;
    document.getElementById("missing-count").textContent = String(report.missing.length);
    const missing = report.verdicts.filter((v) => v.verdict === "missed");
    const list = document.getElementById("missing");
    list.replaceChildren(
      ...(missing.length
        ? missing.map((v) => {
            const li = document.createElement("li");
            li.dataset.testid = "missing-district";
            li.textContent = `${v.district}: p${report.target.percentile} ${seconds(v.value_s)} (${v.count} alerts)`;
            return li;
          })
        : [Object.assign(document.createElement("li"), { textContent: "Every district with alerts meets the target." })]),
    );
    renderTable(report);
    page.dataset.state = "ready";
    loadSvg(`/response-times/stage.svg?${withTarget}`, document.getElementById("stage-chart"));
    loadSvg(`/response-times/chain.svg?${params}`, document.getElementById("chain-chart"));
  }

  document.getElementById("csv-export").addEventListener("click", async () => {
    const { params } = query();
    try {
      const response = await authed(`/response-times/export.csv?${params}`, "text/csv");
      const disposition = response.headers.get("Content-Disposition") || "";
      const match = /filename="([^"]+)"/.exec(disposition);
      const url = URL.createObjectURL(await response.blob());
      const link = document.createElement("a");
      link.href = url;
      link.download = match ? match[1] : "response-times.csv";
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      NB.say(`CSV export failed: ${err.message}`, { kind: "error" });
    }
  });

  const periodSelect = document.getElementById("period");
  periodSelect.addEventListener("change", () => {
    document.getElementById("since-label").hidden = periodSelect.value !== "date";
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  load();
})();
