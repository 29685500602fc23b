/*
 * The fleet map: every node at its coordinates, coloured by state, clustered
 * when zoomed out, with district outlines (GET /fleet-map, columnar JSON).
 *
 * Offline by default: no tiles, only the nodes and outlines on a plain
 * background; a deployment's own tile server is used when the API names one.
 * Leaflet and leaflet.markercluster are vendored (scripts/vendor-frontend.sh)
 * and loaded by <script defer> tags after this file, so the map starts on
 * DOMContentLoaded, when every deferred script has run.
 *
 * Live: alerts arrive on the SSE feed (/stream/alerts) and recolour their
 * node at once; presence and power are not on the feed, so the states are
 * re-read every REFRESH_MS (GET /fleet-map/states, one small integer per node)
 * and soon after any alert change. Timings are kept in window.nbMapMetrics
 * for `bench console`.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }
  const REFRESH_MS = 30000;
  const SOON_MS = 1500;
  const LABELS_MIN_ZOOM = 11;
  const OPEN = new Set(["new", "acknowledged", "dispatched", "on_scene"]);
  const ALERTING = new Set(["panic", "tamper", "acl_denied"]);
  const COLOURS = {
    alert: "#c62828",
    offline: "#424242",
    power_risk: "#ef6c00",
    lagging: "#6a1b9a",
    online: "#2e7d32",
  };
  const LABELS = {
    alert: "Alert active",
    offline: "Offline",
    power_risk: "Power at risk",
    lagging: "Lagging firmware",
    online: "Online",
  };
  const metrics = { started_at: performance.now() };
  window.nbMapMetrics = metrics;

  const mapEl = document.getElementById("fleet-map");
  const legend = document.getElementById("map-legend");
  const total = document.getElementById("map-total");
  const note = document.getElementById("map-note");
  const streamStatus = document.getElementById("stream-status");
  const nodeUrl = (id) => `${NB.queueUrl}nodes/${encodeURIComponent(id)}`;

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));

  let fleet = null; /* the last full load */
  let markers = []; /* index-aligned with fleet.nodes.id */
  let indexOf = new Map();
  let map = null;
  let cluster = null;
  let outlines = null;
  let renderer = null;
  let soonTimer = null;
  const hidden = new Set(); /* states unticked in the legend */

  function styleFor(code) {
    const name = fleet.states[code];
    return {
      radius: name === "online" ? 5 : 7,
      color: "#ffffff",
      weight: 1,
      fillColor: COLOURS[name] || "#000",
      fillOpacity: 0.95,
    };
  }

  /* A cluster takes the colour of its most urgent node (state codes are in urgency order). */
  function clusterIcon(group) {
    let worst = fleet.states.length - 1;
    for (const marker of group.getAllChildMarkers()) {
      if (marker.nbState < worst) {
        worst = marker.nbState;
      }
    }
    const name = fleet.states[worst];
    const count = group.getChildCount();
    const size = count < 100 ? 34 : count < 1000 ? 40 : 48;
    return L.divIcon({
      html: `<div><span>${Number(count)}</span></div>`,
      className: `nb-cluster nb-cluster-${name}`,
      iconSize: L.point(size, size),
    });
  }

  /* The legend is also the filter: unticking a state hides its nodes (and
   * takes them out of the clusters' counts). Built once; counts updated. */
  function renderLegend(counts) {
    if (legend.childElementCount !== fleet.states.length) {
      const items = fleet.states.map((name) => {
        const li = document.createElement("li");
        li.dataset.testid = "legend-item";
        li.dataset.state = name;
        const label = document.createElement("label");
        label.className = "legend-toggle";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.checked = !hidden.has(name);
        box.dataset.testid = `legend-toggle-${name}`;
        box.addEventListener("change", () => {
          if (box.checked) {
            hidden.delete(name);
          } else {
            hidden.add(name);
          }
          applyFilter();
        });
        const swatch = document.createElement("span");
        swatch.className = `swatch swatch-${name}`;
        swatch.setAttribute("aria-hidden", "true");
        const text = document.createElement("span");
        text.textContent = LABELS[name] || name;
        label.append(box, swatch, text);
        const count = document.createElement("span");
        count.className = "legend-count";
        count.dataset.testid = `count-${name}`;
        li.append(label, count);
        return li;
      });
      legend.replaceChildren(...items);
    }
    for (const name of fleet.states) {
      legend.querySelector(`[data-testid="count-${name}"]`).textContent = String(counts[name] || 0);
    }
    total.textContent = String(fleet.nodes.id.length);
  }

  function applyFilter() {
    const shown = hidden.size
      ? markers.filter((m) => !hidden.has(fleet.states[m.nbState]))
      : markers;
    cluster.clearLayers();
    cluster.addLayers(shown);
    mapEl.dataset.shown = String(shown.length);
  }

  /* Markers whose state changed: re-cluster them, or re-filter when a state is hidden. */
  function restyled(changed) {
    if (!changed.length) {
      return;
    }
    if (hidden.size) {
      applyFilter();
    } else {
      cluster.refreshClusters(changed);
    }
  }

  function buildMap() {
    const t0 = performance.now();
    const nodes = fleet.nodes;
    if (!map) {
      /* maxZoom: with no tile layer to say it, the clusterer needs it from the map. */
      map = L.map(mapEl, {
        preferCanvas: true,
        attributionControl: false,
        minZoom: 3,
        zoomSnap: 0.25,
        maxZoom: 19,
      });
      renderer = L.canvas();
      /* Zoomed far out (a phone showing the whole city) the names would pile up. */
      const labels = () => mapEl.classList.toggle("labels-off", map.getZoom() < LABELS_MIN_ZOOM);
      map.on("zoomend", labels);
      map.whenReady(labels);
      if (fleet.tile_url) {
        L.tileLayer(fleet.tile_url, { maxZoom: 19 }).addTo(map);
        mapEl.dataset.tiles = "on";
      } else {
        mapEl.dataset.tiles = "off";
      }
    }
    /* The view first: layers need a zoom to be added. */
    if (nodes.id.length) {
      const bounds = L.latLngBounds(nodes.lat.map((lat, i) => [lat, nodes.lon[i]]));
      map.fitBounds(bounds.pad(0.05));
    } else {
      map.setView([31.52, 74.35], 11); /* Lahore */
    }
    if (cluster) {
      map.removeLayer(cluster);
    }
    if (outlines) {
      map.removeLayer(outlines);
    }
    /* Outlines under the markers, on the same canvas: a second canvas on top
     * would take the clicks meant for the nodes. */
    outlines = L.layerGroup().addTo(map);
    for (const outline of fleet.outlines) {
      L.polygon(outline.ring, {
        color: "#1565c0",
        weight: 2,
        dashArray: "6 4",
        fill: true,
        fillOpacity: 0.04,
        interactive: false,
        renderer,
      })
        .bindTooltip(outline.district, { permanent: true, direction: "center", className: "district-label" })
        .addTo(outlines);
    }

    cluster = L.markerClusterGroup({
      chunkedLoading: true,
      /* The clusterer adds markers in chunks between frames; the map is whole when it says so. */
      chunkProgress: (processed, totalCount) => {
        if (processed === totalCount) {
          metrics.clusters_ms = performance.now() - metrics.started_at;
        }
      },
      showCoverageOnHover: false,
      maxClusterRadius: 50,
      disableClusteringAtZoom: 17,
      iconCreateFunction: clusterIcon,
    });
    markers = new Array(nodes.id.length);
    indexOf = new Map();
    for (let i = 0; i < nodes.id.length; i += 1) {
      const marker = L.circleMarker([nodes.lat[i], nodes.lon[i]], {
        ...styleFor(nodes.state[i]),
        renderer,
      });
      marker.nbState = nodes.state[i];
      marker.nbIndex = i;
      markers[i] = marker;
      indexOf.set(nodes.id[i], i);
    }
    cluster.on("click", (event) => {
      const i = event.layer.nbIndex;
      if (i !== undefined) {
        window.location.assign(nodeUrl(fleet.nodes.id[i]));
      }
    });
    cluster.on("mouseover", (event) => {
      const i = event.layer.nbIndex;
      if (i !== undefined && !event.layer.getTooltip()) {
        const district = fleet.districts[fleet.nodes.district[i]];
        const state = LABELS[fleet.states[event.layer.nbState]];
        event.layer.bindTooltip(`${fleet.nodes.id[i]} · ${district} · ${state}`).openTooltip();
      }
    });
    map.addLayer(cluster);
    applyFilter();
    const ids = document.getElementById("map-node-ids");
    ids.replaceChildren(
      ...nodes.id.slice(0, 2000).map((id) => {
        const option = document.createElement("option");
        option.value = id;
        return option;
      }),
    );
    renderLegend(fleet.counts);
    const parts = [];
    if (fleet.without_position) {
      parts.push(`${fleet.without_position} nodes report no position and are not drawn.`);
    }
    if (fleet.baseline_firmware) {
      parts.push(`Lagging: firmware older than ${fleet.baseline_firmware} (most nodes run it).`);
    }
    parts.push(fleet.tile_url ? "Map tiles from this deployment's tile server." : "No map tiles (offline).");
    note.textContent = parts.join(" ");
    metrics.build_ms = performance.now() - t0;
    mapEl.dataset.state = "ready";
    mapEl.dataset.nodes = String(nodes.id.length);
  }

  async function loadFleet() {
    const t0 = performance.now();
    let response;
    try {
      response = await fetch(`${NB.apiBase}/fleet-map`, {
        headers: { Authorization: `Bearer ${NB.token()}`, Accept: "application/json" },
      });
    } catch (_err) {
      NB.say("The fleet server cannot be reached.", { kind: "error" });
      return;
    }
    if (response.status === 401) {
      NB.signOut("expired");
      return;
    }
    if (!response.ok) {
      NB.say(`The fleet map failed (HTTP ${response.status})`, { kind: "error" });
      return;
    }
    const text = await response.text();
    metrics.fetch_ms = performance.now() - t0;
    metrics.bytes = text.length;
    const t1 = performance.now();
    fleet = JSON.parse(text);
    metrics.parse_ms = performance.now() - t1;
    buildMap();
    /* The first paint after the markers are in. */
    requestAnimationFrame(() => {
      metrics.ready_ms = performance.now() - metrics.started_at;
    });
  }

  function setState(i, code) {
    const marker = markers[i];
    if (!marker || marker.nbState === code) {
      return false;
    }
    marker.nbState = code;
    fleet.nodes.state[i] = code;
    marker.setStyle(styleFor(code));
    if (marker.getTooltip()) {
      marker.unbindTooltip();
    }
    return true;
  }

  async function refreshStates() {
    if (!fleet) {
      return;
    }
    let states;
    try {
      states = await NB.api("/fleet-map/states");
    } catch (err) {
      NB.say(`Map states failed: ${err.message}`, { kind: "error" });
      return;
    }
    if (states.order_hash !== fleet.order_hash) {
      await loadFleet(); /* nodes came or went */
      return;
    }
    const t0 = performance.now();
    const changed = [];
    states.state.forEach((code, i) => {
      if (setState(i, code)) {
        changed.push(markers[i]);
      }
    });
    restyled(changed);
    renderLegend(states.counts);
    metrics.last_update_ms = performance.now() - t0;
    metrics.last_update_changed = changed.length;
    metrics.updates = (metrics.updates || 0) + 1;
  }

  function refreshSoon() {
    window.clearTimeout(soonTimer);
    soonTimer = window.setTimeout(refreshStates, SOON_MS);
  }

  /* An alert frame: an open panic/tamper/ACL alert turns its node red at once;
   * anything else (closed, power) is settled by the next state read. */
  function onAlert(data) {
    const alert = data && data.alert;
    if (!alert || !fleet) {
      return;
    }
    const i = indexOf.get(alert.node_id);
    if (i === undefined) {
      refreshSoon();
      return;
    }
    if (OPEN.has(alert.state) && ALERTING.has(alert.type)) {
      const t0 = performance.now();
      if (setState(i, fleet.states.indexOf("alert"))) {
        restyled([markers[i]]);
      }
      metrics.last_alert_ms = performance.now() - t0;
      metrics.alerts_live = (metrics.alerts_live || 0) + 1;
      mapEl.dataset.lastAlertNode = alert.node_id;
    }
    refreshSoon();
  }

  function setStream(state, text) {
    if (streamStatus) {
      streamStatus.dataset.state = state;
      streamStatus.textContent = text;
    }
  }

  /* The shared layout (layout.js) opens the feed and drives the indicator;
   * without it, the map opens its own. */
  function openStream() {
    if (typeof NBLayout !== "undefined") {
      NBLayout.onFeed(onAlert);
      return;
    }
    const url = `${NB.apiBase}/stream/alerts?access_token=${encodeURIComponent(NB.token())}`;
    const source = new EventSource(url);
    source.addEventListener("open", () => setStream("live", "Live"));
    source.addEventListener("error", () => {
      setStream("down", "Reconnecting…");
    });
    source.addEventListener("alert", (event) => {
      try {
        onAlert(JSON.parse(event.data));
      } catch (_err) {
        /* a frame we cannot read changes nothing */
      }
    });
    source.addEventListener("resync", () => refreshSoon());
  }


  document.getElementById("map-find").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = document.getElementById("map-find-input").value.trim();
    const i = indexOf.get(id);
    if (i === undefined) {
      NB.say(`No node ${id} on the map`, { kind: "error" });
      return;
    }
    cluster.zoomToShowLayer(markers[i], () => {
      markers[i].bindTooltip(id).openTooltip();
    });
    /* The keyboard's way to the node page (a canvas marker takes no focus). */
    const open = document.getElementById("map-find-open");
    open.href = nodeUrl(id);
    open.textContent = `Open ${id}'s page`;
    open.hidden = false;
  });

  /* For tests and `bench console`: where a node is drawn, and a state refresh on demand. */
  window.nbMapDebug = {
    pointOf(id) {
      const i = indexOf.get(id);
      if (i === undefined || !map) {
        return null;
      }
      const point = map.latLngToContainerPoint(markers[i].getLatLng());
      const box = mapEl.getBoundingClientRect();
      return { x: box.left + point.x, y: box.top + point.y, visible: Boolean(markers[i]._map) };
    },
    refreshStates: () => refreshStates(),
    stateOf(id) {
      const i = indexOf.get(id);
      return i === undefined ? null : fleet.states[markers[i].nbState];
    },
  };

  document.addEventListener("DOMContentLoaded", async () => {
    if (typeof L === "undefined" || !L.markerClusterGroup) {
      NB.say("The map library did not load.", { kind: "error" });
      return;
    }
    await loadFleet();
    openStream();
    window.setInterval(refreshStates, REFRESH_MS);
  });
})();
