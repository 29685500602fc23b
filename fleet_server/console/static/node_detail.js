/*
 * One node's page (/console/nodes/<id>): GET /node-detail/<id> in one call,
 * the 48-hour power chart drawn by the server (GET /power/nodes/<id>/chart.svg,
 * the Power page's chart), and commands (POST /nodes/<id>/commands, then
 * GET /nodes/<id>/replies/<request_id> until the node answers).
 *
 * Times are stored in UTC and shown in Pakistan time (PKT, UTC+5), where the
 * sites are. Every value from the API is written with textContent.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }
  const REPLY_WAIT_MS = 30000;
  const REPLY_POLL_MS = 1000;
  const page = document.getElementById("main");
  const nodeId = decodeURIComponent(window.location.pathname.split("/").pop() || "");
  const pktFormat = new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Karachi",
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  });

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));
  document.getElementById("refresh").addEventListener("click", () => load());

  function pkt(iso) {
    if (!iso) {
      return "—";
    }
    return `${pktFormat.format(new Date(iso))} PKT`;
  }

  function ago(iso) {
    if (!iso) {
      return "";
    }
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 120) {
      return `${Math.round(s)} s ago`;
    }
    if (s < 7200) {
      return `${Math.round(s / 60)} min ago`;
    }
    if (s < 172800) {
      return `${(s / 3600).toFixed(1)} h ago`;
    }
    return `${Math.round(s / 86400)} days ago`;
  }

  function duration(seconds) {
    if (seconds < 120) {
      return `${Math.round(seconds)} s`;
    }
    if (seconds < 7200) {
      return `${Math.round(seconds / 60)} min`;
    }
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function show(value) {
    return value === null || value === undefined || value === "" ? "—" : String(value);
  }

  function facts(list, pairs) {
    const items = [];
    for (const [label, value, testid] of pairs) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = show(value);
      if (testid) {
        dd.dataset.testid = testid;
      }
      items.push(dt, dd);
    }
    list.replaceChildren(...items);
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const value of cells) {
      const td = document.createElement("td");
      if (value instanceof Node) {
        td.append(value);
      } else {
        td.textContent = show(value);
      }
      tr.append(td);
    }
    return tr;
  }

  function renderIdentity(d) {
    const n = d.node;
    document.getElementById("node-title").textContent = n.node_id;
    document.title = `${n.node_id} · Nigehbaan`;
    const badge = document.getElementById("node-online");
    badge.textContent = n.online ? "online" : "offline";
    badge.className = `badge ${n.online ? "badge-online" : "badge-offline"}`;
    const position = n.lat === null || n.lon === null ? null : `${n.lat.toFixed(5)}, ${n.lon.toFixed(5)}`;
    facts(document.getElementById("identity"), [
      ["Serial", n.serial, "node-serial"],
      ["Hardware", n.hardware],
      ["Site", n.site_id, "node-site"],
      ["District", n.district, "node-district"],
      ["Position", position],
      ["Lifecycle", n.lifecycle_changed_at ? `${n.lifecycle} since ${pkt(n.lifecycle_changed_at)}` : n.lifecycle, "node-lifecycle"],
      ["Firmware", n.firmware_version, "node-firmware"],
      ["Test mode", n.test_mode ? "on" : "off"],
      ["Clock offset", n.clock_offset_s === null ? null : `${n.clock_offset_s.toFixed(1)} s`],
      ["Telemetry every", n.telemetry_interval_s === null ? null : `${n.telemetry_interval_s} s`],
    ]);
  }

  function renderCertificate(d) {
    const c = d.certificate;
    const h = d.online_history;
    let expiry = null;
    if (c) {
      const days = (Date.parse(c.not_after) - Date.now()) / 86400000;
      expiry = `${pkt(c.not_after)} (${days < 0 ? "expired" : `${Math.floor(days)} days left`})`;
    }
    facts(document.getElementById("certificate"), [
      ["Certificate serial", c ? c.serial : "none issued", "cert-serial"],
      ["Expires", expiry, "cert-expiry"],
      ["Issued", c ? `${pkt(c.issued_at)} (${c.issued_via})` : null],
      [h.online ? "Online since" : "Offline since", `${pkt(h.online_changed_at)} ${ago(h.online_changed_at)}`, "presence-since"],
      ["Last seen", `${pkt(h.last_seen_at)} ${ago(h.last_seen_at)}`],
      ["Last birth", d.node.bd_seq === null ? null : `session ${d.node.bd_seq} (online since above)`],
      ["Availability", `${h.availability_pct} % over ${h.days} days`, "availability"],
    ]);
    document.getElementById("history-days").textContent = String(h.days);
    const timeline = document.getElementById("timeline");
    const start = Date.parse(h.since);
    const span = Date.now() - start;
    const bars = h.outages.map((o) => {
      const from = Math.max(Date.parse(o.since), start);
      const to = o.until ? Date.parse(o.until) : Date.now();
      const bar = document.createElement("span");
      bar.style.left = `${(100 * (from - start)) / span}%`;
      bar.style.width = `${Math.max(0.4, (100 * (to - from)) / span)}%`;
      bar.title = `offline ${pkt(o.since)} → ${o.until ? pkt(o.until) : "now"}`;
      return bar;
    });
    timeline.replaceChildren(...bars);
    timeline.setAttribute("aria-label", `${h.outages.length} outages in ${h.days} days`);
    const list = document.getElementById("outages");
    list.replaceChildren(
      ...h.outages.slice(0, 5).map((o) => {
        const li = document.createElement("li");
        li.textContent = `Offline ${pkt(o.since)} → ${o.until ? pkt(o.until) : "still offline"} (${duration(o.seconds)})`;
        return li;
      }),
    );
  }

  function renderHealth(d) {
    const note = document.getElementById("health-note");
    const rows = document.getElementById("health-rows");
    if (!d.health) {
      note.textContent = "No ping answered yet: send a ping below to read the components' health.";
      rows.replaceChildren();
      return;
    }
    note.textContent = `From the ping answered ${pkt(d.health.at)}: ${d.health.ok ? "all components ok" : "a component is not ok"}.`;
    rows.replaceChildren(
      ...Object.entries(d.health.components).map(([name, h]) => {
        const ok = document.createElement("span");
        ok.className = h && h.ok ? "ok" : "bad";
        ok.textContent = h && h.ok ? "ok" : "not ok";
        const tr = row([name, ok, h ? h.detail : null]);
        tr.dataset.testid = "health-row";
        return tr;
      }),
    );
  }

  function renderPower(d) {
    const p = d.power;
    const pct = (v) => (v === null || v === undefined ? null : `${Math.round(v * 100)} %`);
    const unit = (v, u) => (v === null || v === undefined ? null : `${v} ${u}`);
    if (!p) {
      facts(document.getElementById("power-now"), [["Power", "this node reports no power"]]);
    } else {
      facts(document.getElementById("power-now"), [
        ["Read at", `${pkt(p.ts)} (node clock)`],
        ["Battery", [pct(p.battery_soc), unit(p.battery_v, "V"), unit(p.battery_temp_c, "°C")].filter(Boolean).join(", "), "power-battery"],
        ["Autonomy", p.autonomy_h === null ? null : `${p.autonomy_h.toFixed(1)} h (target ${p.autonomy_target_h} h)`, "power-autonomy"],
        ["Load / panel", `${show(unit(p.load_w, "W"))} / ${show(unit(p.panel_w, "W"))}`],
        ["Supply", p.mains_present ? "mains" : "battery"],
        ["Shedding step", p.policy_step],
      ]);
    }
    const cameras = d.cameras || [];
    document.getElementById("cameras-note").textContent = cameras.length
      ? "Each camera's counters as its latest telemetry reported them."
      : "This node reports no camera.";
    document.getElementById("camera-rows").replaceChildren(
      ...cameras.map((c) => {
        const dropped = c.frames_in ? ` (${((100 * c.frames_dropped) / c.frames_in).toFixed(1)} %)` : "";
        const tr = row([
          c.camera_id,
          c.frames_in,
          `${c.frames_dropped}${dropped}`,
          c.plates_per_hour,
          [c.fault, c.shed].filter(Boolean).join(", ") || "—",
          pkt(c.updated_at),
        ]);
        tr.dataset.testid = "camera-row";
        return tr;
      }),
    );
    document.getElementById("not-recorded").textContent =
      `Not recorded by the server: ${d.not_recorded.join(", ")}.`;
  }

  async function loadChart() {
    const chart = document.getElementById("power-chart");
    let response;
    try {
      response = await fetch(`${NB.apiBase}/power/nodes/${encodeURIComponent(nodeId)}/chart.svg?hours=48`, {
        headers: { Authorization: `Bearer ${NB.token()}`, Accept: "image/svg+xml" },
      });
    } catch (_err) {
      return;
    }
    if (!response.ok) {
      chart.replaceChildren();
      return;
    }
    const doc = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
    if (doc.documentElement.nodeName === "svg") {
      chart.replaceChildren(document.importNode(doc.documentElement, true));
    }
  }

  function describeCommand(c) {
    if (c.name === "test_mode") {
      return c.args.enabled ? `test mode on for ${c.args.duration_s} s` : "test mode off";
    }
    if (c.name === "set_config") {
      return `set config ${JSON.stringify(c.args.changes || c.args)}`;
    }
    return c.name;
  }

  /* A reply in a line: a ping's health is summarised (the table above has it
   * in full); anything else is its JSON, cut short, whole in the tooltip. */
  function replySummary(result) {
    if (!result) {
      return "";
    }
    if (result.health && typeof result.health === "object") {
      const parts = Object.entries(result.health.components || {});
      const bad = parts.filter(([, h]) => !(h && h.ok)).map(([name]) => name);
      const health = bad.length ? `not ok: ${bad.join(", ")}` : `${parts.length} components ok`;
      return `uptime ${result.uptime_s} s, outbox ${result.outbox_depth}, ${health}`;
    }
    const text = JSON.stringify(result);
    return text.length > 160 ? `${text.slice(0, 157)}…` : text;
  }

  function replyCell(c) {
    const pre = document.createElement("pre");
    pre.className = "reply";
    if (!c.replied) {
      pre.textContent = "no reply yet";
    } else if (c.ok) {
      pre.textContent = `ok ${replySummary(c.result)}`;
      pre.title = JSON.stringify(c.result);
    } else {
      pre.textContent = `refused: ${c.error}`;
    }
    return pre;
  }

  function renderLists(d) {
    document.getElementById("command-rows").replaceChildren(
      ...d.commands.map((c) => {
        const tr = row([pkt(c.sent_at), describeCommand(c), c.sent_by, replyCell(c)]);
        tr.dataset.testid = "command-row";
        tr.dataset.requestId = c.request_id;
        return tr;
      }),
    );
    document.getElementById("open-alerts").textContent = String(d.open_alerts);
    document.getElementById("alert-rows").replaceChildren(
      ...d.alerts.map((a) => {
        const tr = row([pkt(a.received_at), `${a.type} ${a.severity}`, a.state]);
        tr.dataset.testid = "node-alert-row";
        return tr;
      }),
    );
    document.getElementById("event-rows").replaceChildren(
      ...d.events.map((e) => row([pkt(e.received_at), e.type, e.seq, `${pkt(e.ts)}${e.ts_implausible ? " (implausible)" : ""}`])),
    );
    document.getElementById("enrollment-rows").replaceChildren(
      ...d.enrollment.map((s) => {
        const tr = row([pkt(s.at), s.what, s.detail]);
        tr.dataset.testid = "enrollment-row";
        return tr;
      }),
    );
  }

  async function load() {
    let detail;
    try {
      detail = await NB.api(`/node-detail/${encodeURIComponent(nodeId)}`);
    } catch (err) {
      NB.say(`Node ${nodeId}: ${err.message}`, { kind: "error" });
      page.dataset.state = "error";
      return;
    }
    renderIdentity(detail);
    renderCertificate(detail);
    renderHealth(detail);
    renderPower(detail);
    renderLists(detail);
    page.dataset.state = "ready";
    loadChart();
  }

  /* ---- commands */
  const nameSelect = document.getElementById("command-name");
  const status = document.getElementById("command-status");
  function syncForm() {
    document.getElementById("duration-label").hidden = nameSelect.value !== "test_mode_on";
    document.getElementById("changes-label").hidden = nameSelect.value !== "set_config";
  }
  nameSelect.addEventListener("change", syncForm);
  syncForm();

  function commandBody() {
    const choice = nameSelect.value;
    if (choice === "test_mode_on") {
      const seconds = Number(document.getElementById("command-duration").value) || 600;
      return { name: "test_mode", args: { enabled: true, duration_s: seconds } };
    }
    if (choice === "test_mode_off") {
      return { name: "test_mode", args: { enabled: false } };
    }
    if (choice === "set_config") {
      return { name: "set_config", args: { changes: JSON.parse(document.getElementById("command-changes").value) } };
    }
    return { name: "ping", args: {} };
  }

  async function waitForReply(requestId) {
    const deadline = Date.now() + REPLY_WAIT_MS;
    while (Date.now() < deadline) {
      try {
        return await NB.api(`/nodes/${encodeURIComponent(nodeId)}/replies/${encodeURIComponent(requestId)}`);
      } catch (err) {
        if (err.status !== 404) {
          throw err;
        }
      }
      await new Promise((resolve) => window.setTimeout(resolve, REPLY_POLL_MS));
    }
    return null;
  }

  document.getElementById("command-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = commandBody();
    } catch (_err) {
      status.textContent = "The changes are not valid JSON.";
      return;
    }
    status.textContent = `Sending ${body.name}…`;
    let sent;
    try {
      sent = await NB.api(`/nodes/${encodeURIComponent(nodeId)}/commands`, { method: "POST", json: body });
    } catch (err) {
      status.textContent = `${body.name} not sent: ${err.message}`;
      status.dataset.state = "refused";
      return;
    }
    status.textContent = `${body.name} sent; waiting for the node's reply…`;
    status.dataset.state = "sent";
    load();
    try {
      const reply = await waitForReply(sent.request_id);
      if (reply === null) {
        status.textContent = `${body.name}: no reply within ${REPLY_WAIT_MS / 1000} s (the node may be offline).`;
        status.dataset.state = "timeout";
      } else {
        status.textContent = reply.ok ? `${body.name}: ok` : `${body.name}: refused — ${reply.error}`;
        status.dataset.state = reply.ok ? "ok" : "refused";
      }
    } catch (err) {
      status.textContent = `${body.name}: ${err.message}`;
    }
    load();
  });

  load();
})();
