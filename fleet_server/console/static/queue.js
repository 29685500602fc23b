/*
 * The live alert queue: loads open alerts, follows the SSE feed, offers the
 * legal next transitions per row, and shows node online/offline state.
 * Around it: filters and a search over the open alerts, a paged history of
 * closed ones (asked of the API, page by page), each alert's lifecycle with
 * the reasons given, a confirmation with a reason before an alert is closed
 * as resolved or false alarm, and a beep plus a desktop notification for a
 * new P1 (Web Audio and the Notification API, no sound files).
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
  const HISTORY_PAGE = 25;
  const SEARCH_DEBOUNCE_MS = 250;
  const OPEN_STATES = ["new", "acknowledged", "dispatched", "on_scene"];
  /* States that leave the open queue; the history view lists them. */
  const CLOSED_LIST = ["resolved", "closed", "false_alarm", "duplicate", "test"];
  const CLOSED_STATES = new Set(CLOSED_LIST);
  /* An alert id is a ULID: a search that looks like one is looked up directly. */
  const ALERT_ID = /^[0-9A-HJKMNP-TV-Z]{26}$/i;
  const SOUND_KEY = "nigehbaan.sound";

  /* Alert types and the roles the enrollment API admits, rendered into the
   * page by the server (fleet_server.console.routes). */
  const ALERT_TYPES = JSON.parse(document.body.dataset.alertTypes || "[]");
  const ENROLLMENT_ROLES = JSON.parse(document.body.dataset.enrollmentRoles || "[]");

  /* The server's lifecycle table (state → legal next states), rendered into
   * the page from fleet_server.alerting.TRANSITIONS. */
  const LEGAL = JSON.parse(document.body.dataset.transitions || "{}");

  /* What an operator can do from the queue, in button order; each is offered
   * when the server's table allows it from the row's state. */
  const ACTIONS = [
    { to: "acknowledged", label: "Acknowledge", primary: true },
    { to: "dispatched", label: "Dispatch", primary: true },
    { to: "on_scene", label: "On scene", primary: true },
    {
      to: "resolved",
      label: "Resolve",
      primary: true,
      confirm: "Resolve this alert?",
      explain: "It leaves the open queue and the pillar is told it is over.",
    },
    {
      to: "false_alarm",
      label: "False alarm",
      confirm: "Mark this alert as a false alarm?",
      explain: "It leaves the open queue and counts as a false alarm for this node.",
    },
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

  const filterForm = document.getElementById("alert-filters");
  const filterState = document.getElementById("filter-state");
  const filterType = document.getElementById("filter-type");
  const filterSeverity = document.getElementById("filter-severity");
  const filterDistrict = document.getElementById("filter-district");
  const filterSearch = document.getElementById("filter-search");
  const filterSummary = document.getElementById("filter-summary");
  const openView = document.getElementById("open-view");
  const historyView = document.getElementById("history-view");
  const historyRows = document.getElementById("history-rows");
  const historyCount = document.getElementById("history-count");
  const historyPage = document.getElementById("history-page");
  const historyPrev = document.getElementById("history-prev");
  const historyNext = document.getElementById("history-next");
  const noHistory = document.getElementById("no-history");
  const viewOpen = document.getElementById("view-open");
  const viewHistory = document.getElementById("view-history");
  const navEnrollment = document.getElementById("nav-enrollment");
  const soundToggle = document.getElementById("sound-toggle");
  const notifyEnable = document.getElementById("notify-enable");

  /** alert id → {alert, row} */
  const alerts = new Map();
  /** district names seen on alerts and nodes, for the district filter */
  const districts = new Set();
  let lastAuthCheck = 0;
  let view = "open";
  let historyOffset = 0;
  let historyRequest = 0;

  const whoami = document.getElementById("whoami");
  whoami.textContent = NB.user();
  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));
  document.getElementById("refresh").addEventListener("click", () => {
    loadAlerts();
    loadNodes();
    if (view === "history") {
      loadHistory();
    }
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
      button.addEventListener("click", () => act(alertId(alert), action, button));
      wrap.append(button);
    }
    wrap.append(detailsButton(alert), evidenceButton(alert));
    return wrap;
  }

  function detailsButton(alert) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-quiet";
    button.textContent = "History";
    button.dataset.testid = "action-details";
    button.setAttribute("aria-label", `History of the ${alert.type} alert at ${alert.node_id}`);
    button.addEventListener("click", () => openDetails(alert));
    return button;
  }

  /* "Export evidence": the alert's node-signed files, export and holds (evidence.js). */
  function evidenceButton(alert) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "btn btn-quiet";
    button.textContent = "Export evidence";
    button.dataset.testid = "action-evidence";
    button.setAttribute("aria-label", `Evidence of the ${alert.type} alert at ${alert.node_id}`);
    const target = `${NB.queueUrl}evidence?alert=${encodeURIComponent(alertId(alert))}`;
    button.addEventListener("click", () => window.location.assign(target));
    return button;
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
    } else {
      const wrap = document.createElement("div");
      wrap.className = "actions";
      wrap.append(detailsButton(alert), evidenceButton(alert));
      actions.append(wrap);
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
    let shown = 0;
    for (const entry of entries) {
      rows.append(entry.row);
      // A live arrival nobody has acted on shows whatever the filters say:
      // a filter must never hide a new press from the operator.
      entry.row.hidden = !matches(entry.alert) && entry.row.dataset.fresh !== "true";
      shown += entry.row.hidden ? 0 : 1;
      noteDistrict(entry.alert.district);
    }
    const open = entries.filter((entry) => !CLOSED_STATES.has(entry.alert.state)).length;
    alertCount.textContent = String(open);
    noAlerts.hidden = shown > 0;
    noAlerts.textContent = entries.length ? "No open alerts match the filters." : "No open alerts.";
    filterSummary.hidden = !filtering();
    filterSummary.textContent = `Showing ${shown} of ${entries.length} alerts.`;
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

  /* Closing an alert is asked twice, with a reason: it silences the pillar and
   * takes the alert out of every operator's queue. */
  async function act(id, action, button) {
    let note = "";
    if (action.confirm) {
      const entry = alerts.get(id);
      note = await askReason(action, entry ? entry.alert : null);
      if (note === null) {
        button.focus();
        return;
      }
    }
    await transition(id, action, button, note);
  }

  async function transition(id, action, button, note) {
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
        json: { to: action.to, note },
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
    if (item.op === "created" && item.alert.state === "new" && priorityOf(item.alert) === "P1") {
      alarm(item.alert);
    }
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
    const cameras = cameraSummaries.get(node.node_id);
    if (cameras) {
      item.append(renderCameras(cameras));
    }
    return item;
  }

  /* A camera node's cameras in one line: "2 cameras ok", or "1 ok · 1 stalled · 1 shed".
   * Stalled (an open fault) is the worst, then shed (the power policy slowed or
   * stopped it); the open faults are in the title. From GET /cameras/summary. */
  function renderCameras(summary) {
    const line = document.createElement("span");
    line.className = "node-cameras";
    line.dataset.testid = "node-cameras";
    line.dataset.ok = String(summary.ok);
    line.dataset.stalled = String(summary.stalled);
    line.dataset.shed = String(summary.shed);
    line.dataset.health = summary.stalled ? "stalled" : summary.shed ? "shed" : "ok";
    if (!summary.stalled && !summary.shed) {
      line.textContent = `${summary.cameras} camera${summary.cameras === 1 ? "" : "s"} ok`;
    } else {
      const parts = [];
      if (summary.ok) parts.push(`${summary.ok} ok`);
      if (summary.stalled) parts.push(`${summary.stalled} stalled`);
      if (summary.shed) parts.push(`${summary.shed} shed`);
      line.textContent = `Cameras: ${parts.join(" · ")}`;
    }
    if (summary.faults && summary.faults.length) {
      line.title = summary.faults.join("\n");
    }
    return line;
  }

  let cameraSummaries = new Map();

  async function loadCameraSummaries() {
    try {
      const payload = await NB.api("/cameras/summary");
      cameraSummaries = new Map(listOf(payload).map((s) => [s.node_id, s]));
    } catch (err) {
      // The node list still shows without the camera line (an older server, a hiccup).
      cameraSummaries = new Map();
    }
  }

  async function loadNodes() {
    try {
      const [payload] = await Promise.all([
        NB.api("/nodes?limit=1000"),
        loadCameraSummaries(),
      ]);
      const nodes = listOf(payload);
      nodes.sort((a, b) => {
        // Offline nodes first: they are the ones a technician must visit.
        const ao = a.online ? 1 : 0;
        const bo = b.online ? 1 : 0;
        return ao - bo || String(a.node_id).localeCompare(String(b.node_id));
      });
      nodeList.replaceChildren(...nodes.map(renderNode));
      for (const node of nodes) {
        noteDistrict(node.district);
      }
      const online = nodes.filter((node) => node.online).length;
      nodeSummary.textContent = `${online} online / ${nodes.length - online} offline`;
      noNodes.hidden = nodes.length > 0;
    } catch (err) {
      if (err.status !== 401) {
        NB.say(`Could not load nodes: ${err.message}`, { kind: "error" });
      }
    }
  }

  // ------------------------------------------------------------ filters

  function filtering() {
    return Boolean(
      filterState.value || filterType.value || filterSeverity.value || filterDistrict.value ||
        filterSearch.value.trim(),
    );
  }

  /* The open queue is filtered here, over the alerts already on the page
   * (it is small); rows that arrived live and are still new bypass it. */
  function matches(alert) {
    if (filterState.value && alert.state !== filterState.value) {
      return false;
    }
    if (filterType.value && alert.type !== filterType.value) {
      return false;
    }
    if (filterSeverity.value && priorityOf(alert) !== filterSeverity.value) {
      return false;
    }
    if (filterDistrict.value && alert.district !== filterDistrict.value) {
      return false;
    }
    const search = filterSearch.value.trim().toLowerCase();
    if (search) {
      const node = String(alert.node_id ?? "").toLowerCase();
      return node.includes(search) || alertId(alert).toLowerCase() === search;
    }
    return true;
  }

  function option(value, label) {
    const item = document.createElement("option");
    item.value = value;
    item.textContent = label;
    return item;
  }

  function fillStates() {
    const states = view === "open" ? OPEN_STATES : CLOSED_LIST;
    const all = view === "open" ? "All open" : "All closed";
    filterState.replaceChildren(
      option("", all),
      ...states.map((state) => option(state, STATE_LABELS[state] ?? state)),
    );
  }

  function noteDistrict(district) {
    if (!district || districts.has(district)) {
      return;
    }
    districts.add(district);
    const chosen = filterDistrict.value;
    filterDistrict.replaceChildren(
      option("", "All districts"),
      ...[...districts].sort().map((name) => option(name, name)),
    );
    filterDistrict.value = chosen;
  }

  function applyFilters() {
    if (view === "open") {
      reorder();
    } else {
      historyOffset = 0;
      loadHistory();
    }
  }

  function showView(next) {
    view = next;
    viewOpen.setAttribute("aria-pressed", String(view === "open"));
    viewHistory.setAttribute("aria-pressed", String(view === "history"));
    openView.hidden = view !== "open";
    historyView.hidden = view !== "history";
    fillStates();
    applyFilters();
  }

  function setupFilters() {
    filterType.replaceChildren(
      option("", "All types"),
      ...ALERT_TYPES.map((type) => option(type, type.replace("_", " "))),
    );
    fillStates();
    for (const select of [filterState, filterType, filterSeverity, filterDistrict]) {
      select.addEventListener("change", applyFilters);
    }
    let searchTimer;
    filterSearch.addEventListener("input", () => {
      window.clearTimeout(searchTimer);
      if (view === "open") {
        reorder();
      } else {
        searchTimer = window.setTimeout(applyFilters, SEARCH_DEBOUNCE_MS);
      }
    });
    filterForm.addEventListener("submit", (event) => {
      event.preventDefault();
      applyFilters();
    });
    document.getElementById("filter-clear").addEventListener("click", () => {
      filterForm.reset();
      applyFilters();
    });
    viewOpen.addEventListener("click", () => showView("open"));
    viewHistory.addEventListener("click", () => showView("history"));
    historyPrev.addEventListener("click", () => {
      historyOffset = Math.max(0, historyOffset - HISTORY_PAGE);
      loadHistory();
    });
    historyNext.addEventListener("click", () => {
      historyOffset += HISTORY_PAGE;
      loadHistory();
    });
  }

  // ------------------------------------------------------------ history

  function formatTime(value) {
    const millis = value ? Date.parse(value) : NaN;
    if (Number.isNaN(millis)) {
      return "—";
    }
    return new Date(millis).toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
  }

  function renderHistoryRow(alert) {
    const row = document.createElement("tr");
    const priority = priorityOf(alert);
    row.dataset.testid = "history-row";
    row.dataset.alertId = alertId(alert);
    row.dataset.nodeId = alert.node_id ?? "";
    row.dataset.state = alert.state;
    row.className = `alert-row history-row prio-${priority.toLowerCase()}`;
    const prio = cell(row, "Priority", "alert-priority", "");
    const badge = document.createElement("span");
    badge.className = `badge badge-${priority.toLowerCase()}`;
    badge.textContent = priority;
    prio.append(badge);
    cell(row, "Type", "alert-type", alert.type ?? "—");
    cell(row, "Node", "alert-node", alert.node_id ?? "—");
    placeCell(row, alert);
    cell(row, "Outcome", "alert-state", STATE_LABELS[alert.state] ?? alert.state);
    cell(row, "Received", "alert-received", formatTime(alert.received_at));
    const closedAt = alert.closed_at || alert.resolved_at || alert.updated_at;
    cell(row, "Closed", "alert-closed", formatTime(closedAt));
    const actions = cell(row, "Actions", "alert-actions", "");
    const wrap = document.createElement("div");
    wrap.className = "actions";
    wrap.append(detailsButton(alert), evidenceButton(alert));
    actions.append(wrap);
    return row;
  }

  function historyQuery() {
    const params = new URLSearchParams();
    for (const state of filterState.value ? [filterState.value] : CLOSED_LIST) {
      params.append("state", state);
    }
    if (filterType.value) {
      params.set("type", filterType.value);
    }
    if (filterSeverity.value) {
      params.set("severity", filterSeverity.value);
    }
    if (filterDistrict.value) {
      params.set("district", filterDistrict.value);
    }
    const search = filterSearch.value.trim();
    if (search) {
      params.set("node_id", search);
    }
    params.set("offset", String(historyOffset));
    params.set("limit", String(HISTORY_PAGE));
    return params;
  }

  /* A search that is an alert id is that one alert (if it is closed);
   * anything else names a node. The server pages; this shows one page. */
  async function loadHistory() {
    const request = ++historyRequest;
    const search = filterSearch.value.trim();
    let page;
    let count;
    try {
      if (ALERT_ID.test(search)) {
        let found = null;
        try {
          found = await NB.api(`/alerts/${encodeURIComponent(search.toUpperCase())}`);
        } catch (err) {
          if (err.status !== 404) {
            throw err;
          }
        }
        page = found && CLOSED_STATES.has(found.state) ? [found] : [];
        historyOffset = 0;
        count = page.length;
      } else {
        const reply = await NB.api(`/alerts?${historyQuery()}`);
        page = listOf(reply);
        count = reply && typeof reply.count === "number" ? reply.count : page.length;
      }
    } catch (err) {
      if (err.status !== 401) {
        NB.say(`Could not load the history: ${err.message}`, { kind: "error" });
      }
      return;
    }
    if (request !== historyRequest) {
      return; // a newer filter or page was asked for meanwhile
    }
    for (const alert of page) {
      noteDistrict(alert.district);
    }
    historyRows.replaceChildren(...page.map(renderHistoryRow));
    historyCount.textContent = String(count);
    noHistory.hidden = page.length > 0;
    historyPage.textContent = page.length
      ? `${historyOffset + 1}–${historyOffset + page.length} of ${count}`
      : `0 of ${count}`;
    historyPrev.disabled = historyOffset === 0;
    historyNext.disabled = historyOffset + page.length >= count;
  }

  // ------------------------------------------------------------ dialogs

  const confirmDialog = document.getElementById("confirm-dialog");
  const confirmForm = document.getElementById("confirm-form");
  const confirmReason = document.getElementById("confirm-reason");
  const confirmError = document.getElementById("confirm-error");
  const detailsDialog = document.getElementById("alert-details");
  const detailsSteps = document.getElementById("details-steps");
  let answerConfirm = null;

  function finishConfirm(answer) {
    const answerWith = answerConfirm;
    answerConfirm = null;
    if (confirmDialog.open) {
      confirmDialog.close();
    }
    if (answerWith) {
      answerWith(answer);
    }
  }

  /* Resolves to the reason the operator typed, or null when they backed out. */
  function askReason(action, alert) {
    finishConfirm(null);
    document.getElementById("confirm-title").textContent = action.confirm;
    const where = alert ? `${priorityOf(alert)} ${alert.type} alert at ${alert.node_id}` : "";
    document.getElementById("confirm-text").textContent = `${where}. ${action.explain}`;
    document.getElementById("confirm-submit").textContent = action.label;
    confirmReason.value = "";
    confirmError.hidden = true;
    return new Promise((resolve) => {
      answerConfirm = resolve;
      confirmDialog.showModal();
      confirmReason.focus();
    });
  }

  async function openDetails(alert) {
    document.getElementById("details-title").textContent =
      `${priorityOf(alert)} ${alert.type} alert at ${alert.node_id}`;
    document.getElementById("details-summary").textContent =
      `${placeOf(alert)} · received ${formatTime(alert.received_at)} · alert ${alertId(alert)}`;
    detailsSteps.replaceChildren();
    if (typeof NBSnapshots !== "undefined") {
      NBSnapshots.show(alertId(alert), detailsDialog); // panic snapshot pull (alert_snapshots.js)
    }
    if (!detailsDialog.open) {
      detailsDialog.showModal();
    }
    try {
      const reply = await NB.api(`/alerts/${encodeURIComponent(alertId(alert))}/transitions`);
      detailsSteps.replaceChildren(...listOf(reply).map(renderStep));
    } catch (err) {
      if (err.status !== 401) {
        NB.say(`Could not load the alert's history: ${err.message}`, { kind: "error" });
      }
    }
  }

  function renderStep(step) {
    const item = document.createElement("li");
    item.dataset.testid = "history-step";
    item.dataset.toState = step.to_state;
    const what = document.createElement("span");
    what.className = "step-what";
    const to = STATE_LABELS[step.to_state] ?? step.to_state;
    what.textContent = step.from_state
      ? `${STATE_LABELS[step.from_state] ?? step.from_state} → ${to}`
      : `Raised (${to})`;
    const who = document.createElement("span");
    who.className = "step-who";
    who.textContent = `${formatTime(step.at)} · ${String(step.actor).replace(/^user:/, "")}`;
    item.append(what, " ", who);
    if (step.note) {
      const note = document.createElement("q");
      note.className = "step-note";
      note.dataset.testid = "step-note";
      note.textContent = step.note;
      item.append(" ", note);
    }
    return item;
  }

  function setupDialogs() {
    confirmForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const reason = confirmReason.value.trim();
      if (!reason) {
        confirmError.hidden = false;
        confirmReason.focus();
        return;
      }
      finishConfirm(reason);
    });
    confirmReason.addEventListener("input", () => {
      confirmError.hidden = true;
    });
    document.getElementById("confirm-cancel").addEventListener("click", () => finishConfirm(null));
    // Escape closes a modal dialog by itself; that is a "no".
    confirmDialog.addEventListener("close", () => finishConfirm(null));
    document.getElementById("details-close").addEventListener("click", () => detailsDialog.close());
  }

  // ------------------------------------------------------------ alarms

  /* A new P1 beeps (unless this browser muted it) and raises a desktop
   * notification when the operator allowed them; the notification is silent,
   * so muting the beep keeps it. */
  let audio = null;

  function soundOn() {
    return localStorage.getItem(SOUND_KEY) !== "off";
  }

  function showSound() {
    const on = soundOn();
    soundToggle.setAttribute("aria-pressed", String(on));
    soundToggle.textContent = on ? "Sound on" : "Sound muted";
  }

  /* Browsers start audio suspended until the page has had a gesture; any
   * click or key on the page unlocks it for the alarms that follow. */
  function audioContext() {
    if (!audio) {
      const Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) {
        return null;
      }
      audio = new Context();
    }
    if (audio.state === "suspended") {
      audio.resume().catch(() => {});
    }
    return audio;
  }

  function beep() {
    const context = audioContext();
    if (!context) {
      return;
    }
    const start = context.currentTime + 0.02;
    for (let n = 0; n < 3; n++) {
      const at = start + n * 0.25;
      const tone = context.createOscillator();
      const gain = context.createGain();
      tone.type = "square";
      tone.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.25, at + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.18);
      tone.connect(gain).connect(context.destination);
      tone.start(at);
      tone.stop(at + 0.2);
    }
  }

  function notify(alert) {
    if (!("Notification" in window) || Notification.permission !== "granted") {
      return;
    }
    try {
      const shown = new Notification(`P1 ${alert.type} at ${alert.node_id}`, {
        body: placeOf(alert),
        tag: `alert-${alertId(alert)}`,
        requireInteraction: true,
        silent: true,
      });
      shown.onclick = () => window.focus();
    } catch (_err) {
      // Some browsers allow notifications only from a service worker.
    }
  }

  function alarm(alert) {
    if (soundOn()) {
      beep();
    }
    notify(alert);
  }

  function showNotify() {
    const asking = "Notification" in window && Notification.permission === "default";
    notifyEnable.hidden = !asking;
  }

  function setupAlarms() {
    showSound();
    showNotify();
    soundToggle.addEventListener("click", () => {
      localStorage.setItem(SOUND_KEY, soundOn() ? "off" : "on");
      showSound();
      if (soundOn()) {
        audioContext(); // a click is the gesture that lets audio start
      }
    });
    notifyEnable.addEventListener("click", async () => {
      try {
        await Notification.requestPermission();
      } catch (_err) {
        // An older browser without the promise form; the state is read below.
      }
      showNotify();
      if (Notification.permission === "denied") {
        NB.say("Desktop notifications are blocked in this browser's site settings.");
      }
    });
    const unlock = () => {
      if (soundOn()) {
        audioContext();
      }
    };
    document.addEventListener("pointerdown", unlock);
    document.addEventListener("keydown", unlock);
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
      navEnrollment.hidden = !ENROLLMENT_ROLES.includes(me.role);
    } catch (_err) {
      // 401 already signed out; anything else leaves the name from sign-in.
    }
  }

  setupFilters();
  setupAlarms();
  setupDialogs();
  reorder();
  loadMe();
  loadAlerts();
  loadNodes();
  connect();
  window.setInterval(loadNodes, NODE_REFRESH_MS);
  window.setInterval(tickAges, 1000);
})();
