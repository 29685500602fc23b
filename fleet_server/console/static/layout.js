/*
 * The shared layout of every signed-in console page (templates/_nav.html):
 * who is signed in, which page links their role may use, and the live-feed
 * indicator.
 *
 * Hiding a link is a courtesy, not the guard: the API refuses a role what it
 * may not do (403), and every page shows that refusal. The indicator shows
 * the state of the alert feed (GET /stream/alerts). A page with its own feed
 * (the queue) marks its <body> with data-feed="page" and drives the
 * indicator itself; on every other page this script opens the feed just to
 * show whether the live connection holds, and hands its frames to whoever
 * registered with NBLayout.onFeed(handler).
 *
 * NBLayout.me is a promise of the signed-in user (GET /users/me), or null
 * when it could not be read.
 *
 * Degraded districts: in a cluster deployment a district whose uplink bridge
 * (or broker) is down holds its nodes' events and no alert from them reaches
 * anyone (docs/cluster.md). Every page says so, not only the map: an
 * operator on the queue must know a district has gone quiet for that reason.
 * The badges go into the header's [data-uplinks] list, from
 * GET /cluster/districts every 10 s (scoped to the caller).
 */
"use strict";

const NBLayout = (() => {
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 30000;
  const nav = document.querySelector("[data-testid=console-nav]");
  const indicator = document.getElementById("stream-status");
  const whoami = document.getElementById("whoami");
  const handlers = [];

  function setFeedState(state, text) {
    if (indicator) {
      indicator.dataset.state = state;
      indicator.textContent = text;
    }
  }

  function markCurrentPage() {
    const here = window.location.pathname.replace(/\/+$/, "");
    for (const link of nav.querySelectorAll("a.nav-link")) {
      const target = new URL(link.href, window.location.href).pathname.replace(/\/+$/, "");
      if (target === here) {
        link.setAttribute("aria-current", "page");
      }
    }
  }

  function showRoleLinks(role) {
    for (const link of nav.querySelectorAll("[data-roles]")) {
      link.hidden = !link.dataset.roles.split(/\s+/).includes(role);
    }
  }

  async function loadMe() {
    if (whoami && !whoami.textContent) {
      whoami.textContent = NB.user();
    }
    try {
      const me = await NB.api("/users/me");
      if (whoami) {
        whoami.textContent = `${me.username} · ${me.role}`;
      }
      document.body.dataset.role = me.role;
      showRoleLinks(me.role);
      return me;
    } catch (_err) {
      return null; // a 401 has already signed out
    }
  }

  let reconnectDelay = RECONNECT_MIN_MS;

  function onFrame(message) {
    let item;
    try {
      item = JSON.parse(message.data);
    } catch (_err) {
      return;
    }
    for (const handler of handlers) {
      handler(item);
    }
  }

  function connect() {
    const url = `${NB.apiBase}/stream/alerts?access_token=${encodeURIComponent(NB.token())}`;
    const source = new EventSource(url);
    source.addEventListener("open", () => {
      reconnectDelay = RECONNECT_MIN_MS;
      setFeedState("live", "Live");
    });
    source.addEventListener("alert", onFrame);
    source.addEventListener("message", onFrame);
    source.addEventListener("error", () => {
      setFeedState("down", "Reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        // An expired token shows up here too; /users/me signs out on a 401.
        NB.api("/users/me").catch(() => {});
        window.setTimeout(connect, reconnectDelay);
        reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
      }
    });
  }

  function uplinkBadge(d) {
    const li = document.createElement("li");
    li.className = "badge badge-warn";
    li.dataset.district = d.district;
    li.textContent =
      d.broker !== "connected"
        ? `district ${d.district}: district broker unreachable`
        : `district ${d.district}: uplink bridge ${d.uplink === "down" ? "down" : "state unknown"}`;
    return li;
  }

  async function refreshUplinks() {
    const lists = document.querySelectorAll("[data-uplinks]");
    if (lists.length === 0) {
      return;
    }
    let body;
    try {
      body = await NB.api("/cluster/districts");
    } catch (_err) {
      return; /* each page's own errors already say the server is unreachable */
    }
    const degraded = (body && body.clustered ? body.districts : []).filter((d) => d.degraded);
    for (const list of lists) {
      list.replaceChildren(...degraded.map(uplinkBadge));
      list.hidden = degraded.length === 0;
    }
  }

  let me = Promise.resolve(null);
  if (nav && NB.token()) {
    markCurrentPage();
    me = loadMe();
    refreshUplinks();
    window.setInterval(refreshUplinks, 10000);
    if (document.body.dataset.feed !== "page" && indicator) {
      connect();
    }
  }

  return {
    me,
    onFeed(handler) {
      handlers.push(handler);
    },
    setFeedState,
  };
})();
