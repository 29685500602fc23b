/*
 * The panic snapshot pull in an alert's details (the queue's "History" dialog):
 * which camera nodes the server asked for a still when the alert opened, why
 * each (the pillar's own site, or how many metres away), and each node's
 * answer: the SHA-256 of every still it keeps in its evidence store, or why
 * a camera had none. From GET /alerts/{id}/snapshots; while a node has not
 * answered, the list is read again every 2 s for a minute at most.
 * Everything from the server is written with textContent.
 */
"use strict";

const NBSnapshots = (() => {
  const POLL_MS = 2000;
  const POLL_MAX = 30;
  const STATUS = {
    waiting: "waiting for the node",
    answered: "answered",
    refused: "refused",
    expired: "no answer (expired)",
  };
  const WHY = {
    no_frame: "no frame yet",
    stale: "the camera stalled (old frame)",
    off: "off (power saving)",
    not_started: "cameras not started",
    unknown_camera: "no such camera",
    store_refused: "the node could not store it",
  };
  let timer = null;
  let shownFor = null;

  function el(tag, text, testid) {
    const node = document.createElement(tag);
    if (text !== undefined) {
      node.textContent = text;
    }
    if (testid) {
      node.dataset.testid = testid;
    }
    return node;
  }

  function container(dialog) {
    let box = dialog.querySelector("[data-testid=details-snapshots]");
    if (!box) {
      box = el("section", undefined, "details-snapshots");
      box.className = "details-snapshots";
      const steps = dialog.querySelector("[data-testid=history-steps]");
      steps.after(box);
    }
    return box;
  }

  function renderRequest(request) {
    const item = el("li", undefined, "snapshot-request");
    item.dataset.nodeId = request.node_id;
    item.dataset.status = request.status;
    const why = request.reason === "same_site"
      ? "same site"
      : `${Math.round(request.distance_m || 0)} m away`;
    item.append(el("strong", request.node_id), ` (${why}): ${STATUS[request.status] || request.status}`);
    const cameras = el("ul");
    for (const shot of request.snapshots || []) {
      const line = el("li", undefined, "snapshot-kept");
      const hash = el("code", `sha256:${shot.sha256}`);
      hash.style.wordBreak = "break-all"; // a 71-character hash on a phone
      line.append(`${shot.camera_id}: kept `, hash);
      line.title = `${shot.width}×${shot.height}, ${shot.bytes} bytes, frame ${shot.frame_age_s} s old`;
      cameras.append(line);
    }
    for (const miss of request.missing || []) {
      cameras.append(el("li", `${miss.camera_id}: ${WHY[miss.reason] || miss.reason}`, "snapshot-missing"));
    }
    if (request.error) {
      cameras.append(el("li", request.error, "snapshot-error"));
    }
    if (cameras.children.length) {
      item.append(cameras);
    }
    return item;
  }

  async function load(alertId, box, round) {
    if (shownFor !== alertId) {
      return;
    }
    let answer;
    try {
      answer = await NB.api(`/alerts/${encodeURIComponent(alertId)}/snapshots`);
    } catch (_err) {
      box.hidden = true; // the history above says what failed, if anything
      return;
    }
    if (shownFor !== alertId) {
      return;
    }
    box.hidden = answer.count === 0;
    const list = el("ul", undefined, "snapshot-requests");
    list.append(...answer.data.map(renderRequest));
    box.replaceChildren(el("h3", "Snapshots from nearby cameras"), list);
    if (answer.data.some((r) => r.status === "waiting") && round < POLL_MAX) {
      timer = window.setTimeout(() => load(alertId, box, round + 1), POLL_MS);
    }
  }

  /* Show the alert's snapshot requests in its details dialog (hidden when none). */
  function show(alertId, dialog) {
    window.clearTimeout(timer);
    shownFor = alertId;
    const box = container(dialog);
    box.hidden = true;
    box.replaceChildren();
    dialog.addEventListener("close", () => {
      shownFor = null;
      window.clearTimeout(timer);
    }, { once: true });
    load(alertId, box, 0);
  }

  return { show };
})();
