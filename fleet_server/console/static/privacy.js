/*
 * The privacy page: an admin opens a node, picks a camera, draws privacy masks
 * (polygons) over the camera's view, sees the masked view (the polygons filled
 * black, as the node will black them out), and saves them with a reason: the
 * server makes a new version, records it in the audit log and sends it to the
 * node (PUT /privacy/nodes/{node}/cameras/{camera}/masks). The page shows the
 * node's current version and the one it says it applies, the nodes that lag
 * (GET /privacy/lagging) and the private cameras with their agreements
 * (GET /privacy/private-cameras; PUT …/private to register one). Behind the
 * polygons: a placeholder, or the camera's latest snapshot kept on the server
 * (GET /evidence?node_id=…, then its file with a stated purpose, recorded).
 *
 * Corners are kept as fractions of the frame (0..1), as the node takes them.
 * Everything from the server is written with textContent.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  const W = 1600;
  const H = 900;
  const canvas = document.getElementById("canvas");
  const shapes = document.getElementById("shapes");
  const corners = document.getElementById("corners");
  const drawing = document.getElementById("drawing");
  const cameraSelect = document.getElementById("f-camera");
  const newCamera = document.getElementById("f-new-camera");
  const maskList = document.getElementById("mask-list");
  const editor = document.getElementById("editor");
  const nodeState = document.getElementById("node-state");
  let node = null; // the opened node's record from the API
  let masks = {}; // camera id -> [[[x, y], ...], ...]
  let pending = []; // corners of the polygon being drawn

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));

  /* The placeholder's grid (the server keeps no snapshot of the camera). */
  const grid = document.getElementById("grid");
  for (let i = 1; i < 8; i += 1) {
    const v = document.createElementNS(SVG_NS, "line");
    v.setAttribute("x1", String((W * i) / 8));
    v.setAttribute("x2", String((W * i) / 8));
    v.setAttribute("y1", "0");
    v.setAttribute("y2", String(H));
    const h = document.createElementNS(SVG_NS, "line");
    h.setAttribute("y1", String((H * i) / 8));
    h.setAttribute("y2", String((H * i) / 8));
    h.setAttribute("x1", "0");
    h.setAttribute("x2", String(W));
    grid.append(v, h);
  }

  function cell(row, text, state) {
    const td = document.createElement("td");
    td.textContent = text;
    if (state) {
      td.dataset.state = state;
    }
    row.append(td);
    return td;
  }

  function when(iso) {
    return iso ? iso.slice(0, 16).replace("T", " ") : "–";
  }

  function camera() {
    return newCamera.value.trim() || cameraSelect.value;
  }

  function points(polygon) {
    return polygon.map(([x, y]) => `${(x * W).toFixed(1)},${(y * H).toFixed(1)}`).join(" ");
  }

  function render() {
    const list = masks[camera()] || [];
    shapes.replaceChildren(
      ...list.map((polygon, i) => {
        const shape = document.createElementNS(SVG_NS, "polygon");
        shape.setAttribute("class", "mask");
        shape.setAttribute("points", points(polygon));
        shape.dataset.testid = "mask-shape";
        shape.dataset.index = String(i);
        return shape;
      }),
    );
    drawing.setAttribute("points", points(pending));
    corners.replaceChildren(
      ...pending.map(([x, y]) => {
        const dot = document.createElementNS(SVG_NS, "circle");
        dot.setAttribute("class", "corner");
        dot.setAttribute("cx", String(x * W));
        dot.setAttribute("cy", String(y * H));
        dot.setAttribute("r", "10");
        return dot;
      }),
    );
    maskList.replaceChildren(
      ...list.map((polygon, i) => {
        const item = document.createElement("li");
        item.dataset.testid = "mask-item";
        const text = document.createElement("span");
        text.textContent = `${polygon.length} corners `;
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "btn btn-small";
        remove.textContent = "Remove";
        remove.setAttribute("aria-label", `Remove mask ${i + 1}`);
        remove.addEventListener("click", () => {
          list.splice(i, 1);
          render();
        });
        item.append(text, remove);
        return item;
      }),
    );
  }

  function renderHistory(history) {
    const rows = document.getElementById("history-rows");
    rows.replaceChildren(
      ...history.map((version) => {
        const row = document.createElement("tr");
        row.dataset.testid = "history-row";
        cell(row, String(version.version));
        cell(row, when(version.created_at));
        cell(row, version.changed_by);
        cell(row, version.reason);
        return row;
      }),
    );
  }

  /* The camera's newest snapshot kept on the server (an evidence file), if any. */
  let snapshots = [];
  let shownSha = null; // the snapshot behind the polygons now, if any
  async function loadSnapshots(nodeId) {
    snapshots = [];
    try {
      const list = await NB.api(`/evidence?node_id=${encodeURIComponent(nodeId)}&limit=100`);
      snapshots = list.data.filter(
        (item) => item.state === "stored" && String(item.content_type).startsWith("image/"),
      );
    } catch (_err) {
      /* not allowed to list evidence, or none: the placeholder stays */
    }
    offerSnapshot();
  }

  function latestSnapshot() {
    const id = camera();
    return snapshots
      .filter((item) => item.camera_id === id)
      .sort((a, b) => String(b.captured_at).localeCompare(String(a.captured_at)))[0];
  }

  function offerSnapshot() {
    const item = latestSnapshot();
    document.getElementById("snapshot-offer").hidden = !item;
    document.getElementById("snapshot-when").textContent = item
      ? `Snapshot of ${when(item.captured_at)} UTC.`
      : "";
    if (!item || item.sha256 !== shownSha) {
      const image = document.getElementById("snapshot");
      image.setAttribute("href", "");
      image.setAttribute("visibility", "hidden");
      shownSha = null;
    }
  }

  /* Viewing a snapshot is viewing evidence: it needs a purpose and is recorded. The
   * bytes become a data: URL, which the console's Content-Security-Policy allows. */
  document.getElementById("snapshot-show").addEventListener("click", async () => {
    const item = latestSnapshot();
    const reference = document.getElementById("snap-ref").value.trim();
    if (!item) {
      return;
    }
    if (!reference) {
      NB.say("State why you view the snapshot (a note, case, FIR or alert).", { kind: "error" });
      return;
    }
    const purpose = `${document.getElementById("snap-kind").value}:${reference}`;
    let response;
    try {
      response = await fetch(`${NB.apiBase}/evidence/${item.sha256}/file`, {
        headers: { Authorization: `Bearer ${NB.token()}`, "X-Purpose": purpose },
      });
    } catch (_err) {
      NB.say("The fleet server cannot be reached.", { kind: "error" });
      return;
    }
    if (!response.ok) {
      let detail = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (_err) {
        /* keep the status */
      }
      NB.say(`The snapshot cannot be shown: ${detail}`, { kind: "error" });
      return;
    }
    const blob = await response.blob();
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      const image = document.getElementById("snapshot");
      image.setAttribute("href", String(reader.result));
      image.setAttribute("visibility", "visible");
      shownSha = item.sha256;
    });
    reader.readAsDataURL(blob);
  });

  function showNode(record) {
    node = record;
    masks = {};
    const current = record.current;
    for (const [id, entry] of Object.entries(current ? current.cameras : {})) {
      masks[id] = (entry.masks || []).map((polygon) => polygon.map(([x, y]) => [x, y]));
    }
    const previous = camera();
    cameraSelect.replaceChildren(
      ...record.cameras.map((id) => {
        const option = document.createElement("option");
        option.value = id;
        option.textContent = id;
        return option;
      }),
    );
    if (record.cameras.includes(previous)) {
      cameraSelect.value = previous;
    }
    document.getElementById("current-version").textContent = current
      ? String(current.version)
      : "none";
    document.getElementById("applied-version").textContent = record.applied
      ? String(record.applied.version)
      : "not reported";
    document.getElementById("lag-badge").hidden = !record.lagging;
    nodeState.hidden = false;
    editor.hidden = false;
    pending = [];
    renderHistory(record.history);
    render();
    loadSnapshots(record.node_id);
  }

  /* Open a node; the lag list is read again after it, so the two never disagree. */
  async function openNode(nodeId) {
    try {
      showNode(await NB.api(`/privacy/nodes/${encodeURIComponent(nodeId)}`));
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
    await loadLagging();
  }

  async function loadLagging() {
    try {
      const lag = await NB.api("/privacy/lagging");
      document.getElementById("lag-count").textContent = String(lag.count);
      document.getElementById("lag-rows").replaceChildren(
        ...lag.data.map((item) => {
          const row = document.createElement("tr");
          row.dataset.testid = "lag-row";
          row.dataset.node = item.node_id;
          cell(row, item.node_id);
          cell(row, item.district || "");
          cell(row, String(item.current));
          cell(row, item.applied === null ? "none reported" : String(item.applied), "soon");
          cell(row, when(item.reported_at));
          return row;
        }),
      );
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
  }

  async function loadPrivate() {
    try {
      const list = await NB.api("/privacy/private-cameras");
      document.getElementById("private-count").textContent = String(list.count);
      document.getElementById("private-rows").replaceChildren(
        ...list.data.map((item) => {
          const row = document.createElement("tr");
          row.dataset.testid = "private-row";
          row.dataset.camera = `${item.node_id}/${item.camera_id}`;
          cell(row, `${item.node_id} / ${item.camera_id}`);
          cell(row, item.owner);
          cell(row, item.agreement);
          let state = "";
          let text = when(item.expires_at);
          if (item.expired) {
            state = "expired";
            text = `${text} (expired)`;
          } else if (item.days_left <= 14) {
            state = "soon";
            text = `${text} (${item.days_left} days left)`;
          }
          cell(row, text, state);
          cell(row, item.allow.length ? item.allow.join(", ").replace("_", " ") : "nothing");
          cell(row, item.source || "\u2014"); // without credentials (the server redacts)
          // The node's standards check on connect (issue 15): below standard is live view only.
          const verdict = item.standard || "not checked";
          const detail = item.standard_detail ? ` \u2014 ${item.standard_detail}` : "";
          cell(row, `${verdict}${detail}`, item.standard === "below standard" ? "expired" : "");
          return row;
        }),
      );
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
  }

  /* A click on the picture places a corner, in fractions of the frame. */
  canvas.addEventListener("click", (event) => {
    const box = canvas.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    const y = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
    pending.push([Number(x.toFixed(4)), Number(y.toFixed(4))]);
    render();
  });

  document.getElementById("close-polygon").addEventListener("click", () => {
    if (pending.length < 3) {
      NB.say("A mask needs at least three corners.", { kind: "error" });
      return;
    }
    const id = camera();
    if (!id) {
      NB.say("Pick a camera or give its id first.", { kind: "error" });
      return;
    }
    (masks[id] = masks[id] || []).push(pending);
    pending = [];
    render();
  });
  document.getElementById("undo-point").addEventListener("click", () => {
    pending.pop();
    render();
  });
  document.getElementById("clear-masks").addEventListener("click", () => {
    masks[camera()] = [];
    pending = [];
    render();
  });
  document.getElementById("masked-view").addEventListener("change", (event) => {
    canvas.classList.toggle("masked", event.target.checked);
  });
  canvas.classList.toggle("masked", document.getElementById("masked-view").checked);
  cameraSelect.addEventListener("change", () => {
    newCamera.value = "";
    pending = [];
    render();
    offerSnapshot();
  });
  newCamera.addEventListener("input", () => {
    render();
    offerSnapshot();
  });

  document.getElementById("node-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const nodeId = event.target.elements.node.value.trim();
    if (nodeId) {
      openNode(nodeId);
    }
  });

  document.getElementById("save-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = camera();
    const reason = event.target.elements.reason.value.trim();
    if (!node || !id) {
      NB.say("Open a node and pick a camera first.", { kind: "error" });
      return;
    }
    if (pending.length) {
      NB.say("Close or undo the polygon being drawn first.", { kind: "error" });
      return;
    }
    try {
      const answer = await NB.api(
        `/privacy/nodes/${encodeURIComponent(node.node_id)}/cameras/${encodeURIComponent(id)}/masks`,
        { method: "PUT", json: { masks: masks[id] || [], reason } },
      );
      NB.say(`Version ${answer.version} saved and sent to ${node.node_id}.`);
      event.target.reset();
      await openNode(node.node_id);
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
  });

  document.getElementById("deliver").addEventListener("click", async () => {
    if (!node) {
      return;
    }
    try {
      const answer = await NB.api(`/privacy/nodes/${encodeURIComponent(node.node_id)}/deliver`, {
        method: "POST",
      });
      NB.say(`Version ${answer.version} sent to ${node.node_id} again.`);
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
  });

  document.getElementById("private-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = event.target.elements;
    const expires = f.expires.value;
    const allow = [...event.target.querySelectorAll("input[name=allow]:checked")].map(
      (box) => box.value,
    );
    const body = {
      owner: f.owner.value.trim(),
      agreement: f.agreement.value.trim(),
      expires_at: expires ? `${expires.length === 16 ? `${expires}:00` : expires}Z` : "",
      allow,
      reason: f.reason.value.trim(),
    };
    if (f.source.value.trim()) body.source = f.source.value.trim();
    const minimums = {};
    // The clock is judged for cameras that tell the node their time (ONVIF ones).
    for (const name of ["min_width", "min_height", "min_fps", "max_clock_skew_s"]) {
      if (f[name].value !== "") minimums[name] = Number(f[name].value);
    }
    if (Object.keys(minimums).length) body.standards = minimums;
    const path =
      `/privacy/nodes/${encodeURIComponent(f.node.value.trim())}` +
      `/cameras/${encodeURIComponent(f.camera.value.trim())}/private`;
    try {
      const answer = await NB.api(path, { method: "PUT", json: body });
      NB.say(`Private camera saved (version ${answer.version}).`);
      event.target.reset();
      loadPrivate();
      loadLagging();
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
  });

  const wanted = new URLSearchParams(window.location.search).get("node");
  if (wanted) {
    document.getElementById("f-node").value = wanted;
    openNode(wanted);
  } else {
    loadLagging();
  }
  loadPrivate();
})();
