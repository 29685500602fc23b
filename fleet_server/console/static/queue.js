/*
 * The live alert queue: loads open alerts, follows the SSE feed, offers the
 * legal next transitions per row, and shows node online/offline state.
 *
 * The server is the authority on transitions; the buttons offered here are the
 * lifecycle's legal next steps for the state the row shows, and a refusal
 * (someone else moved the alert first, a rule the server adds) is shown to the
 * operator and the row is reloaded from the server.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const NODE_REFRESH_MS = 15000;
  const CLOSED_LINGER_MS = 8000;
  const AUTH_CHECK_MIN_MS = 10000;
  const RECONNECT_MIN_MS = 2000;
  const RECONNECT_MAX_MS = 30000;

  const LIST_LIMIT = 1000;
  const OPEN_STATES = ["new", "acknowledged", "dispatched", "on_scene"];
  /* States that leave the open queue. */
  const CLOSED_STATES = new Set(["resolved", "closed", "false_alarm", "duplicate", "test"]);

  /* The server's lifecycle table (state → legal next states), rendered into
   * the page from fleet_server.alerting.TRANSITIONS. */
  const LEGAL = JSON.parse(document.body.dataset.transitions || "{}");

  /* What an operator can do from the queue, in button order; each is offered
   * when the server's table allows it from the row's state. */
  const ACTIONS = [
    { to: "acknowledged", label: "Acknowledge", primary: true },
    { to: "dispatched", label: "Dispatch", primary: true },
    { to: "on_scene", label: "On scene", primary: true },
    { to: "resolved", label: "Resolve", primary: true },
    { to: "false_alarm", label: "False alarm" },
  ];
  const STATE_LABELS = {
    new: "New",
    acknowledged: "Acknowledged",
    dispatched: "Dispatched",
    on_scene: "On scene",
    resolved: "Resolved",
    closed: "Closed",
    false_alarm: "False alarm",
    duplicate: "Duplicate",
    test: "Test",
  };

  const rows = document.getElementById("alert-rows");
  const alertCount = document.getElementById("alert-count");
  const noAlerts = document.getElementById("no-alerts");
  const nodeList = document.getElementById("node-list");
  const nodeSummary = document.getElementById("node-summary");
  const noNodes = document.getElementById("no-nodes");
  const streamStatus = document.getElementById("stream-status");

  /** alert id → {alert, row} */
  const alerts = new Map();
  let lastAuthCheck = 0;

  const whoami = document.getElementById("whoami");
  whoami.textContent = NB.user();
  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));
  document.getElementById("refresh").addEventListener("click", () => {
    loadAlerts();
    loadNodes();
  });

  // ------------------------------------------------------------ alert fields

  function alertId(alert) {
    return String(alert.id);
  }

  function priorityOf(alert) {
    return alert.severity ? String(alert.severity).toUpperCase() : "P4";
  }

  /* Age counts from when the server received the press (server clock), not
   * the node's own timestamp, which may be off on a node without GNSS time. */
  function receivedAt(alert) {
    const millis = alert.received_at ? Date.parse(alert.received_at) : NaN;
    return Number.isNaN(millis) ? null : millis;
  }

  function formatAge(millis) {
    if (millis === null) {
      return "—";
    }
    const seconds = Math.max(0, Math.floor((Date.now() - millis) / 1000));
    if (seconds < 60) {
      return `${seconds} s`;
    }
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return `${minutes} min`;
    }
    const hours = Math.floor(minutes / 60);
    return `${hours} h ${minutes % 60} min`;
  }

  function placeOf(item) {
    const parts = [item.site_id, item.district].filter((part) => part);
    return parts.length ? parts.join(" / ") : "—";
  }

  /* Site above district, each on its own line, so the column stays narrow. */
  function placeCell(row, alert) {
    const td = cell(row, "Site / district", "alert-place", "");
    if (!alert.site_id && !alert.district) {
      td.textContent = "—";
      return;
    }
    const site = document.createElement("span");
    site.className = "site";
    site.textContent = alert.site_id || "—";
    const district = document.createElement("span");
    district.className = "district";
    district.textContent = alert.district || "—";
    const stack = document.createElement("div");
    stack.className = "stack";
    stack.append(site, " ", district);
    td.append(stack);
  }

  function escalationCell(row, alert) {
    const td = cell(row, "Escalation", "alert-escalation", "");
    const level = alert.escalation_level;
    if (level === null || level === undefined) {
      td.textContent = "—";
      return;
    }
    const levelText = document.createElement("span");
    levelText.className = "level";
    levelText.textContent = `L${level}`;
    const stack = document.createElement("div");
    stack.className = "stack";
    stack.append(levelText);
    if (alert.queue) {
      const queueText = document.createElement("span");
      queueText.className = "queue-name";
      queueText.textContent = alert.queue;
      stack.append(" ", queueText);
    }
    td.append(stack);
  }

  // ------------------------------------------------------------ rendering

  function cell(row, label, testid, text) {
    const td = document.createElement("td");
    td.dataset.label = label;
    td.dataset.testid = testid;
    td.textContent = text;
    row.append(td);
    return td;
  }

  function actionButtons(alert) {
    const legal = LEGAL[alert.state] || [];
    const wrap = document.createElement("div");
    wrap.className = "actions";
    for (const action of ACTIONS) {
      if (!legal.includes(action.to)) {
        continue;
      }
      const button = document.createElement("button");
      button.type = "button";
      button.className = action.primary ? "btn btn-primary" : "btn btn-warn";
      button.textContent = action.label;
      button.dataset.testid = `action-${action.to}`;
      button.setAttribute(
        "aria-label",
        `${action.label}: ${alert.type} alert at ${alert.node_id} (${priorityOf(alert)})`,
      );
      button.addEventListener("click", () => transition(alertId(alert), action, button));
      wrap.append(button);
    }
    return wrap;
  }

  function renderRow(alert, { fresh = false } = {}) {
    const row = document.createElement("tr");
    const priority = priorityOf(alert);
    row.dataset.testid = "alert-row";
    row.dataset.alertId = alertId(alert);
    row.dataset.nodeId = alert.node_id ?? "";
    row.dataset.state = alert.state;
    row.className = `alert-row prio-${priority.toLowerCase()} state-${alert.state}`;
    if (fresh) {
      row.classList.add("fresh");
      row.dataset.fresh = "true";
    }
    const prio = cell(row, "Priority", "alert-priority", "");
    const badge = document.createElement("span");
    badge.className = `badge badge-${priority.toLowerCase()}`;
    badge.textContent = priority;
    prio.append(badge);
    cell(row, "Type", "alert-type", alert.type ?? "—");
    cell(row, "Node", "alert-node", alert.node_id ?? "—");
    placeCell(row, alert);
    const state = cell(row, "State", "alert-state", STATE_LABELS[alert.state] ?? alert.state);
    state.dataset.state = alert.state;
    cell(row, "Presses", "alert-press-count", String(alert.press_count ?? 1));
    const age = cell(row, "Age", "alert-age", formatAge(receivedAt(alert)));
    age.dataset.since = String(receivedAt(alert) ?? "");
    escalationCell(row, alert);
    const actions = cell(row, "Actions", "alert-actions", "");
    if (!CLOSED_STATES.has(alert.state)) {
      actions.append(actionButtons(alert));
    }
    return row;
  }

  function sortKey(alert) {
    const priority = Number.parseInt(priorityOf(alert).slice(1), 10) || 9;
    return [priority, receivedAt(alert) ?? Number.MAX_SAFE_INTEGER];
  }

  function reorder() {
    const entries = [...alerts.values()].sort((a, b) => {
      const [pa, ta] = sortKey(a.alert);
      const [pb, tb] = sortKey(b.alert);
      return pa - pb || ta - tb;
    });
    for (const entry of entries) {
      rows.append(entry.row);
    }
    const open = entries.filter((entry) => !CLOSED_STATES.has(entry.alert.state)).length;
    alertCount.textContent = String(open);
    noAlerts.hidden = entries.length > 0;
    const fresh = entries.filter((entry) => entry.alert.state === "new").length;
    document.title = fresh ? `(${fresh}) Alert queue · Nigehbaan` : "Alert queue · Nigehbaan";
  }

  /* Insert or replace an alert's row. `fresh` marks rows that arrived live
   * (highlighted until the operator acts on them). */
  function upsert(alert, { fresh = false } = {}) {
    const id = alertId(alert);
    const previous = alerts.get(id);
    if (previous && alert.updated_at && previous.alert.updated_at &&
        Date.parse(alert.updated_at) < Date.parse(previous.alert.updated_at)) {
      return; // an older copy (a list reload racing the feed)
    }
    if (!previous && CLOSED_STATES.has(alert.state)) {
      return; // never seen open here; nothing to show
    }
    const keepFresh = previous ? previous.row.dataset.fresh === "true" : false;
    const stillFresh = (fresh || keepFresh) && alert.state === "new";
    if (previous && stillFresh === keepFresh &&
        JSON.stringify(previous.alert) === JSON.stringify(alert)) {
      // Same data (a list reload, the feed echoing our own action): keep the
      // row, so keyboard focus on its buttons is not lost.
      previous.touched = performance.now();
      return;
    }
    const row = renderRow(alert, { fresh: stillFresh });
    if (previous) {
      previous.row.replaceWith(row);
      window.clearTimeout(previous.lingerTimer);
    }
    const entry = { alert, row, lingerTimer: undefined, touched: performance.now() };
    alerts.set(id, entry);
    if (CLOSED_STATES.has(alert.state)) {
      // Leave the row visible briefly so the operator sees the outcome.
      entry.lingerTimer = window.setTimeout(() => {
        row.remove();
        alerts.delete(id);
        reorder();
      }, CLOSED_LINGER_MS);
    }
    reorder();
  }

  function listOf(payload) {
    if (Array.isArray(payload)) {
      return payload;
    }
    return (payload && payload.data) || [];
  }

  /* The list endpoint is newest-first and filters by one state, so ask per
   * open state: a busy night of resolved alerts never pushes an open one out. */
  async function loadAlerts() {
    const started = performance.now();
    try {
      const pages = await Promise.all(
        OPEN_STATES.map((state) => NB.api(`/alerts?state=${state}&limit=${LIST_LIMIT}`)),
      );
      const seen = new Set();
      for (const alert of pages.flatMap(listOf)) {
        seen.add(alertId(alert));
        upsert(alert);
      }
      for (const [id, entry] of alerts) {
        // A row the feed brought while the list was on its way is newer than
        // the list, not missing from it.
        if (!seen.has(id) && !CLOSED_STATES.has(entry.alert.state) && entry.touched < started) {
          entry.row.remove();
          alerts.delete(id);
        }
      }
      reorder();
    } catch (err) {
      if (err.status !== 401) {
        NB.say(`Could not load alerts: ${err.message}`, { kind: "error" });
      }
    }
  }

  async function reloadAlert(id) {
    try {
      upsert(await NB.api(`/alerts/${encodeURIComponent(id)}`));
    } catch (err) {
      NB.say(`Could not reload alert ${id}: ${err.message}`, { kind: "error" });
    }
  }

  async function transition(id, action, button) {
    const entry = alerts.get(id);
    const buttons = entry ? entry.row.querySelectorAll("button") : [button];
    for (const b of buttons) {
      b.disabled = true;
    }
    try {
      // The reply is the transition record; the row is refreshed from the
      // alert itself (the feed brings the same change moments later).
      await NB.api(`/alerts/${encodeURIComponent(id)}/transitions`, {
        method: "POST",
        json: { to: action.to, note: "" },
      });
      const node = entry ? entry.alert.node_id : "";
      NB.say(`${action.label}: alert at ${node} is now ${STATE_LABELS[action.to] ?? action.to}.`);
      await reloadAlert(id);
    } catch (err) {
      NB.say(`${action.label} refused: ${err.message}`, { kind: "error" });
      await reloadAlert(id);
    } finally {
      for (const b of buttons) {
        b.disabled = false;
      }
    }
  }

  // ------------------------------------------------------------ live feed

  function setStream(state, text) {
    streamStatus.dataset.state = state;
    streamStatus.textContent = text;
  }

  function onFeed(message) {
    let item;
    try {
      item = JSON.parse(message.data);
    } catch (_err) {
      return;
    }
    if (!item || !item.alert) {
      return;
    }
    const live = item.op === "created" || item.op === "joined";
    upsert(item.alert, { fresh: live });
  }

  /* EventSource retries by itself after a network error, but gives up for
   * good on an HTTP error (a server restarting behind a proxy answers 502);
   * then we open a new one, backing off up to RECONNECT_MAX_MS. */
  let reconnectDelay = RECONNECT_MIN_MS;

  function connect() {
    const url = `${NB.apiBase}/stream/alerts?access_token=${encodeURIComponent(NB.token())}`;
    const source = new EventSource(url);
    source.addEventListener("open", () => {
      reconnectDelay = RECONNECT_MIN_MS;
      setStream("live", "Live");
      // Whatever happened while we were away is in the list, not the feed.
      loadAlerts();
    });
    source.addEventListener("alert", onFeed);
    source.addEventListener("message", onFeed);
    source.addEventListener("error", () => {
      setStream("down", "Reconnecting…");
      // EventSource cannot see the status code; an expired token shows up here,
      // so ask the API, which signs out on 401.
      const now = Date.now();
      if (now - lastAuthCheck > AUTH_CHECK_MIN_MS) {
        lastAuthCheck = now;
        loadNodes();
      }
      if (source.readyState === EventSource.CLOSED) {
        window.setTimeout(connect, reconnectDelay);
        reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
      }
    });
  }

  // ------------------------------------------------------------ nodes

  function renderNode(node) {
    const item = document.createElement("li");
    const online = Boolean(node.online);
    item.dataset.testid = "node-row";
    item.dataset.nodeId = node.node_id;
    item.dataset.online = String(online);
    item.className = `node ${online ? "node-online" : "node-offline"}`;
    const name = document.createElement("span");
    name.className = "node-id";
    name.textContent = node.node_id;
    const place = document.createElement("span");
    place.className = "node-place";
    place.textContent = placeOf(node);
    const badge = document.createElement("span");
    badge.className = `badge ${online ? "badge-online" : "badge-offline"}`;
    badge.dataset.testid = "node-state";
    badge.textContent = online ? "online" : "offline";
    item.append(badge, name, place);
    return item;
  }

  async function loadNodes() {
    try {
      const nodes = listOf(await NB.api("/nodes?limit=1000"));
      nodes.sort((a, b) => {
        // Offline nodes first: they are the ones a technician must visit.
        const ao = a.online ? 1 : 0;
        const bo = b.online ? 1 : 0;
        return ao - bo || String(a.node_id).localeCompare(String(b.node_id));
      });
      nodeList.replaceChildren(...nodes.map(renderNode));
      const online = nodes.filter((node) => node.online).length;
      nodeSummary.textContent = `${online} online / ${nodes.length - online} offline`;
      noNodes.hidden = nodes.length > 0;
    } catch (err) {
      if (err.status !== 401) {
        NB.say(`Could not load nodes: ${err.message}`, { kind: "error" });
      }
    }
  }

  // ------------------------------------------------------------ start

  function tickAges() {
    for (const cellEl of rows.querySelectorAll("[data-testid=alert-age]")) {
      const since = Number.parseInt(cellEl.dataset.since, 10);
      cellEl.textContent = formatAge(Number.isNaN(since) ? null : since);
    }
  }

  async function loadMe() {
    try {
      const me = await NB.api("/users/me");
      whoami.textContent = `${me.username} · ${me.role}`;
    } catch (_err) {
      // 401 already signed out; anything else leaves the name from sign-in.
    }
  }

  reorder();
  loadMe();
  loadAlerts();
  loadNodes();
  connect();
  window.setInterval(loadNodes, NODE_REFRESH_MS);
  window.setInterval(tickAges, 1000);
})();
