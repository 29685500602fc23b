/*
 * The technician's phone page: find a node (id, serial or QR label text),
 * run the commissioning checklist, watch button presses and power readings.
 *
 * The checklist is `nigehbaan tech commission` (fleet_server/tech/commission.py)
 * step by step, through the same endpoints: GET /nodes/{id}; POST
 * /nodes/{id}/commands and GET /nodes/{id}/replies/{request} for test_mode and
 * ping; GET /events?type=panic for the press; GET /alerts/{id} and its
 * escalations; POST /nodes/{id}/lifecycle. Test mode is turned off again
 * whatever happened after it was turned on, as the CLI does. A QR label holds
 * this page's URL with ?node=<id>, so scanning it opens the page on the node.
 * Times are shown in PKT (Asia/Karachi), where the sites are.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const PRESS_TIMEOUT_S = 120;
  const REPLY_TIMEOUT_S = 30;
  const TEST_MODE_S = 900;
  const SETTLE_MS = 1000;
  const LAST_SEEN_MAX_S = 300;
  const OUTBOX_SANE_MAX = 5;
  const POLL_MS = 1000;
  const LIVE_MS = 3000;
  const FIELD_ROLES = ["admin", "technician"];

  const $ = (id) => document.getElementById(id);
  const findForm = $("find-form");
  const findText = $("find-text");
  const findResults = $("find-results");
  const findNone = $("find-none");
  const nodeCard = $("node-card");
  const checklistCard = $("checklist-card");
  const pressesCard = $("presses-card");
  const powerCard = $("power-card");
  const checklist = $("checklist");
  const result = $("checklist-result");
  const startButton = $("commission-start");
  const cancelButton = $("commission-cancel");
  const prompt = $("press-prompt");
  const countdown = $("press-countdown");
  const presses = $("presses");
  const noPresses = $("no-presses");

  let current = null; // the node shown
  let running = false;
  let cancelled = false;
  let liveTimer = null;
  const seenPresses = new Set();

  $("logout").addEventListener("click", () => NB.signOut("signed-out"));

  class Cancelled extends Error {}

  const sleep = (ms) => new Promise((resolve) => window.setTimeout(resolve, ms));

  function pkt(iso) {
    if (!iso) {
      return "—";
    }
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) {
      return "—";
    }
    const text = at.toLocaleString("en-GB", {
      timeZone: "Asia/Karachi",
      day: "numeric",
      month: "short",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    return `${text} PKT`;
  }

  function number(value, unit, digits = 1) {
    return value === null || value === undefined ? "—" : `${Number(value).toFixed(digits)} ${unit}`;
  }

  // ------------------------------------------------------------ finding

  async function find(text) {
    findResults.hidden = true;
    findNone.hidden = true;
    let page;
    try {
      page = await NB.api(`/technician/nodes?q=${encodeURIComponent(text)}`);
    } catch (err) {
      NB.say(err.message, { kind: "error" });
      return;
    }
    if (page.count === 0) {
      findNone.hidden = false;
      return;
    }
    if (page.count === 1) {
      show(page.data[0]);
      return;
    }
    findResults.replaceChildren(
      ...page.data.map((node) => {
        const item = document.createElement("li");
        const b = document.createElement("button");
        b.type = "button";
        b.className = "btn";
        b.dataset.testid = "find-result";
        b.textContent = `${node.node_id} · ${node.serial || "no serial"} · ${node.site_id || "no site"}`;
        b.addEventListener("click", () => show(node));
        item.append(b);
        return item;
      }),
    );
    findResults.hidden = false;
  }

  findForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = findText.value.trim();
    if (text) {
      find(text);
    } else {
      findText.focus();
    }
  });

  // ------------------------------------------------------------ the node

  function renderNode(node) {
    $("node-id").textContent = node.node_id;
    const online = $("node-online");
    online.textContent = node.online ? "online" : "offline";
    online.className = `badge ${node.online ? "badge-online" : "badge-offline"}`;
    $("node-serial").textContent = node.serial || "—";
    $("node-place").textContent = [node.site_id, node.district].filter(Boolean).join(" · ") || "—";
    $("node-lifecycle").textContent = node.lifecycle;
    $("node-firmware").textContent = node.firmware_version || "—";
    $("node-seen").textContent = pkt(node.last_seen_at);
    $("node-test-mode").textContent = node.test_mode ? "on" : "off";
  }

  function show(node) {
    current = node;
    findResults.hidden = true;
    renderNode(node);
    nodeCard.hidden = false;
    checklistCard.hidden = false;
    pressesCard.hidden = false;
    powerCard.hidden = false;
    checklist.replaceChildren();
    result.hidden = true;
    presses.replaceChildren();
    seenPresses.clear();
    const url = new URL(window.location.href);
    url.searchParams.set("node", node.node_id);
    window.history.replaceState(null, "", url);
    refreshLive();
    if (liveTimer === null) {
      liveTimer = window.setInterval(refreshLive, LIVE_MS);
    }
  }

  async function refreshNode() {
    if (!current) {
      return;
    }
    try {
      current = await NB.api(`/nodes/${encodeURIComponent(current.node_id)}`);
      renderNode(current);
    } catch (_err) {
      // the next refresh tries again; errors worth reading come from actions
    }
  }

  async function panicEvents(nodeId) {
    const page = await NB.api(
      `/events?node_id=${encodeURIComponent(nodeId)}&type=panic&limit=10000`,
    );
    return page.data;
  }

  function payloadOf(event) {
    try {
      const data = JSON.parse(event.payload);
      return data && typeof data === "object" ? data : {};
    } catch (_err) {
      return {};
    }
  }

  async function refreshPresses() {
    const nodeId = current.node_id;
    let events;
    try {
      events = await panicEvents(nodeId);
    } catch (_err) {
      return;
    }
    if (!current || current.node_id !== nodeId) {
      return;
    }
    const latest = events.slice(-5).reverse();
    presses.replaceChildren(
      ...latest.map((event) => {
        const item = document.createElement("li");
        item.dataset.testid = "press";
        item.dataset.test = String(payloadOf(event).test === true);
        if (seenPresses.size && !seenPresses.has(event.event_id)) {
          item.classList.add("fresh");
        }
        const what = document.createElement("span");
        what.textContent = payloadOf(event).test === true ? "test press" : "PANIC press (not a test)";
        const when = document.createElement("span");
        when.textContent = pkt(event.received_at);
        item.append(what, when);
        return item;
      }),
    );
    for (const event of events) {
      seenPresses.add(event.event_id);
    }
    noPresses.hidden = events.length > 0;
  }

  async function refreshPower() {
    const nodeId = current.node_id;
    let reading;
    try {
      reading = await NB.api(`/technician/nodes/${encodeURIComponent(nodeId)}/power`);
    } catch (_err) {
      return;
    }
    if (!current || current.node_id !== nodeId) {
      return;
    }
    $("power-soc").textContent =
      reading.battery_soc === null || reading.battery_soc === undefined
        ? "—"
        : `${Math.round(reading.battery_soc * 100)} %`;
    $("power-volts").textContent = number(reading.battery_v, "V", 2);
    $("power-panel").textContent = number(reading.panel_w, "W");
    $("power-load").textContent = number(reading.load_w, "W");
    $("power-autonomy").textContent = number(reading.autonomy_h, "h");
    $("power-mains").textContent =
      reading.mains_present === null || reading.mains_present === undefined
        ? "—"
        : reading.mains_present
          ? "present"
          : "absent";
    $("power-at").textContent = pkt(reading.ts);
  }

  function refreshLive() {
    if (!current) {
      return;
    }
    refreshPresses();
    refreshPower();
    if (!running) {
      refreshNode();
    }
  }

  // An alert from this node (a press) shows at once, not at the next poll.
  NBLayout.onFeed((item) => {
    if (current && item && item.alert && item.alert.node_id === current.node_id) {
      refreshPresses();
    }
  });

  // ------------------------------------------------------------ the checklist

  function addCheck(name, status, detail = "") {
    const item = document.createElement("li");
    item.dataset.testid = "check";
    item.dataset.name = name;
    item.dataset.status = status;
    const badge = document.createElement("span");
    badge.className = "check-status";
    badge.dataset.testid = "check-status";
    badge.textContent = status;
    const text = document.createElement("span");
    const label = document.createElement("span");
    label.className = "check-name";
    label.textContent = name;
    const more = document.createElement("span");
    more.className = "check-detail";
    more.textContent = detail;
    text.append(label, more);
    item.append(badge, text);
    checklist.append(item);
    return {
      status,
      set(newStatus, newDetail = "") {
        this.status = newStatus;
        item.dataset.status = newStatus;
        badge.textContent = newStatus;
        more.textContent = newDetail;
      },
    };
  }

  function checkCancelled() {
    if (cancelled) {
      throw new Cancelled("cancelled by the technician");
    }
  }

  /* Send a command and wait for the node's reply (TechClient.command). */
  async function command(nodeId, name, args) {
    const sent = await NB.api(`/nodes/${encodeURIComponent(nodeId)}/commands`, {
      method: "POST",
      json: { name, args },
    });
    const deadline = Date.now() + REPLY_TIMEOUT_S * 1000;
    for (;;) {
      try {
        return await NB.api(
          `/nodes/${encodeURIComponent(nodeId)}/replies/${encodeURIComponent(sent.request_id)}`,
        );
      } catch (err) {
        if (!(err.status === 404 && err.message.includes("reply_pending"))) {
          throw err;
        }
      }
      if (Date.now() > deadline) {
        throw new Error(`${nodeId} did not answer within ${REPLY_TIMEOUT_S}s`);
      }
      await sleep(500);
    }
  }

  async function buttonTest(nodeId, checks) {
    const before = new Set((await panicEvents(nodeId)).map((e) => e.event_id));
    const step = addCheck("button press", "running", "waiting for the press");
    prompt.hidden = false;
    const deadline = Date.now() + PRESS_TIMEOUT_S * 1000;
    let fresh = [];
    try {
      while (!fresh.length) {
        checkCancelled();
        const left = Math.ceil((deadline - Date.now()) / 1000);
        if (left <= 0) {
          step.set("fail", `no press arrived within ${PRESS_TIMEOUT_S}s`);
          checks.push(step);
          return;
        }
        countdown.textContent = `Waiting ${left} s more.`;
        await sleep(POLL_MS);
        fresh = (await panicEvents(nodeId)).filter((e) => !before.has(e.event_id));
      }
    } finally {
      prompt.hidden = true;
    }
    checks.push(step);
    const event = fresh[0];
    if (payloadOf(event).test !== true) {
      step.set("fail", `press ${event.event_id} arrived NOT marked test`);
      return;
    }
    step.set("pass", `test press ${event.event_id} arrived`);
    refreshPresses();
    const escalation = addCheck("test press did not escalate", "running");
    checks.push(escalation);
    if (!event.alert_id) {
      escalation.set("fail", "the press was filed under no alert");
      return;
    }
    await sleep(SETTLE_MS); // an immediate level-0 escalation would have happened by now
    const alert = await NB.api(`/alerts/${encodeURIComponent(event.alert_id)}`);
    const steps = await NB.api(`/alerts/${encodeURIComponent(event.alert_id)}/escalations`);
    if (alert.state !== "test" || steps.length || alert.escalation_level !== null) {
      escalation.set(
        "fail",
        `alert ${event.alert_id} is ${alert.state} with ${steps.length} escalation steps`,
      );
      return;
    }
    escalation.set("pass", `alert ${event.alert_id} filed as test`);
  }

  async function health(nodeId, checks) {
    const step = addCheck("health", "running", "ping");
    checks.push(step);
    let reply;
    try {
      reply = await command(nodeId, "ping", {});
    } catch (err) {
      step.set("fail", err.message);
      return;
    }
    const found = await NB.api(`/nodes/${encodeURIComponent(nodeId)}`);
    const res = reply.result || {};
    const problems = [];
    if (!reply.ok) {
      problems.push(`ping refused: ${reply.error}`);
    }
    const depth = res.outbox_depth;
    if (Number.isInteger(depth) && depth > OUTBOX_SANE_MAX) {
      problems.push(`${depth} events waiting on the node (uplink trouble?)`);
    }
    if (found.last_seen_at) {
      const age = (Date.now() - Date.parse(found.last_seen_at)) / 1000;
      if (age > LAST_SEEN_MAX_S) {
        problems.push(`last contact ${Math.round(age)}s ago`);
      }
    }
    const detail = `uptime ${res.uptime_s}s, outbox ${depth}, last seen ${pkt(found.last_seen_at)}`;
    step.set(problems.length ? "fail" : "pass", problems.join("; ") || detail);
  }

  async function commission(nodeId) {
    const checks = [];
    let node;
    try {
      node = await NB.api(`/nodes/${encodeURIComponent(nodeId)}`);
    } catch (err) {
      checks.push(addCheck("node online", "fail", err.message));
      return checks;
    }
    if (!node.online) {
      checks.push(addCheck("node online", "fail", `offline (last seen ${pkt(node.last_seen_at)})`));
      return checks;
    }
    checks.push(addCheck("node online", "pass", `last seen ${pkt(node.last_seen_at)}`));

    const testOn = addCheck("test mode on", "running");
    checks.push(testOn);
    try {
      const reply = await command(nodeId, "test_mode", { enabled: true, duration_s: TEST_MODE_S });
      if (!reply.ok) {
        testOn.set("fail", `node refused: ${reply.error}`);
        return checks;
      }
    } catch (err) {
      testOn.set("fail", err.message);
      return checks;
    }
    testOn.set("pass", `for ${TEST_MODE_S}s`);
    refreshNode();
    try {
      await buttonTest(nodeId, checks);
      checkCancelled();
      await health(nodeId, checks);
      checks.push(addCheck("camera snapshot", "skipped", cameraReason(node)));
    } catch (err) {
      checks.push(addCheck(err instanceof Cancelled ? "cancelled" : "checklist", "fail", err.message));
    } finally {
      const testOff = addCheck("test mode off", "running");
      checks.push(testOff);
      try {
        const reply = await command(nodeId, "test_mode", { enabled: false });
        testOff.set(reply.ok ? "pass" : "fail", reply.ok ? "" : String(reply.error));
      } catch (err) {
        testOff.set("fail", `${err.message} (it ends by itself after ${TEST_MODE_S}s)`);
      }
    }
    if (passed(checks)) {
      const lifecycle = addCheck("lifecycle → commissioned", "running");
      checks.push(lifecycle);
      try {
        await NB.api(`/nodes/${encodeURIComponent(nodeId)}/lifecycle`, {
          method: "POST",
          json: { to: "commissioned", note: "commissioning checklist passed (console)" },
        });
        lifecycle.set("pass");
      } catch (err) {
        lifecycle.set("fail", err.message);
      }
    }
    return checks;
  }

  function cameraReason(node) {
    return (node.capabilities || []).includes("camera")
      ? "camera snapshots are not built yet"
      : "no camera";
  }

  function passed(checks) {
    return checks.length > 0 && checks.every((c) => c.status !== "fail");
  }

  startButton.addEventListener("click", async () => {
    if (!current || running) {
      return;
    }
    running = true;
    cancelled = false;
    startButton.disabled = true;
    cancelButton.hidden = false;
    checklist.replaceChildren();
    result.hidden = true;
    let checks = [];
    try {
      checks = await commission(current.node_id);
    } finally {
      running = false;
      startButton.disabled = false;
      cancelButton.hidden = true;
      prompt.hidden = true;
    }
    const ok = passed(checks);
    result.dataset.passed = String(ok);
    result.textContent = ok ? "PASS — the node is commissioned." : "FAIL — see the steps above.";
    result.hidden = false;
    await refreshNode();
  });

  cancelButton.addEventListener("click", () => {
    cancelled = true;
  });

  NBLayout.me.then((me) => {
    const allowed = me && FIELD_ROLES.includes(me.role);
    startButton.disabled = !allowed;
    $("checklist-role").hidden = Boolean(allowed);
  });

  const wanted = new URLSearchParams(window.location.search).get("node");
  if (wanted) {
    findText.value = wanted;
    find(wanted);
  } else {
    findText.focus();
  }
})();
