/*
 * The plate reads page: an operator finds a vehicle's passes by plate (exact,
 * starts with, or one look-alike character off), node, district and time,
 * a page at a time (GET /plate-reads), and sees each camera's health from
 * its node's telemetry (GET /cameras). Both answers hold only the user's
 * districts. Everything from the server is written with textContent. Times
 * in the filter are taken as UTC, the way the server stores them.
 *
 * A search needs a stated purpose (X-Purpose: case, FIR, alert or note). The
 * page asks for it once per session (kept in sessionStorage with the token
 * it was given under, so a new sign-in asks again) and sends it with every
 * search; the server records each search with it. A purpose the server
 * refuses is forgotten and asked for again.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const PAGE = 50;
  const form = document.getElementById("plates-filter");
  const rows = document.getElementById("plate-rows");
  const count = document.getElementById("read-count");
  const pageInfo = document.getElementById("page-info");
  const newer = document.getElementById("newer");
  const older = document.getElementById("older");
  const cameraRows = document.getElementById("camera-rows");
  const cameraCount = document.getElementById("camera-count");
  const purposeForm = document.getElementById("purpose-form");
  const purposeShown = document.getElementById("purpose-shown");
  const PURPOSE_KEY = "nb.platePurpose";
  let offset = 0;

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));

  /* The purpose stated in this session, or "" (one given under another token is stale). */
  function purpose() {
    try {
      const kept = JSON.parse(sessionStorage.getItem(PURPOSE_KEY) || "null");
      if (kept && kept.token === (NB.token() || "").slice(-16) && kept.purpose) {
        return kept.purpose;
      }
    } catch (_err) {
      /* unreadable: ask again */
    }
    return "";
  }

  function showPurpose() {
    const current = purpose();
    purposeForm.hidden = Boolean(current);
    purposeShown.hidden = !current;
    form.querySelector("[data-testid=plates-search]").disabled = !current;
    document.getElementById("purpose-text").textContent = current;
    if (!current) {
      rows.replaceChildren();
      count.textContent = "0";
      pageInfo.textContent = "State a purpose to search";
      newer.disabled = true;
      older.disabled = true;
    }
    return current;
  }

  function forgetPurpose() {
    sessionStorage.removeItem(PURPOSE_KEY);
    showPurpose();
  }

  /* The filter as query parameters; a datetime-local value is UTC here. */
  function filterParams() {
    const params = new URLSearchParams();
    for (const name of ["plate", "node_id", "district"]) {
      const value = form.elements[name].value.trim();
      if (value) {
        params.set(name, value);
      }
    }
    if (params.has("plate")) {
      params.set("match", form.elements.match.value);
    }
    for (const name of ["since", "until"]) {
      const value = form.elements[name].value;
      if (value) {
        params.set(name, `${value.length === 16 ? `${value}:00` : value}Z`);
      }
    }
    return params;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) {
      td.className = className;
    }
    td.textContent = text;
    row.append(td);
    return td;
  }

  function when(iso) {
    return iso.slice(0, 19).replace("T", " ");
  }

  function ms(p50, p95) {
    return p50 === null || p50 === undefined ? "–" : `${p50.toFixed(0)} / ${p95.toFixed(0)}`;
  }

  function renderRead(read) {
    const row = document.createElement("tr");
    row.dataset.testid = "plate-row";
    row.dataset.canonical = read.canonical;
    const at = cell(row, when(read.received_at), "when");
    at.title = `received ${read.received_at}\nnode clock ${read.ts}`;
    cell(row, read.plate, "plate");
    cell(row, read.canonical, "plate");
    cell(row, [read.province, read.layout].filter(Boolean).join(" · "));
    cell(row, read.node_id);
    cell(row, read.camera_id);
    cell(row, read.district || "");
    cell(row, `${Math.round(read.confidence * 100)} %`, "num");
    cell(row, String(read.frames), "num");
    return row;
  }

  function renderCamera(camera) {
    const row = document.createElement("tr");
    row.dataset.testid = "camera-row";
    row.dataset.camera = `${camera.node_id}/${camera.camera_id}`;
    cell(row, camera.node_id);
    cell(row, camera.camera_id);
    let state = "ok";
    let text = "Reading";
    if (camera.fault) {
      state = "fault";
      text = camera.fault.replace("_", " ");
    } else if (camera.shed === "stopped") {
      state = "stopped";
      text = "Off (power)";
    } else if (camera.shed === "slowed") {
      state = "slowed";
      text = `Slowed to ${Math.round((camera.analytics_rate || 0) * 100)} % (power)`;
    }
    cell(row, text).dataset.state = state;
    cell(row, String(camera.frames_in), "num");
    cell(row, String(camera.frames_dropped), "num");
    const motion = camera.motion_ratio;
    cell(row, motion === null ? "–" : `${Math.round(motion * 100)} %`, "num");
    cell(row, ms(camera.detector_ms_p50, camera.detector_ms_p95), "num");
    cell(row, ms(camera.reader_ms_p50, camera.reader_ms_p95), "num");
    cell(row, camera.plates_per_hour === null ? "–" : String(camera.plates_per_hour), "num");
    cell(row, when(camera.updated_at), "when");
    return row;
  }

  async function load() {
    const params = filterParams();
    params.set("limit", String(PAGE));
    params.set("offset", String(offset));
    const stated = showPurpose();
    if (!stated) {
      return;
    }
    let page;
    try {
      page = await NB.api(`/plate-reads?${params}`, { headers: { "X-Purpose": stated } });
    } catch (err) {
      NB.say(err.message, { kind: "error" });
      if (err.status === 428 || err.status === 422) {
        forgetPurpose();
      }
      return;
    }
    rows.replaceChildren(...page.data.map(renderRead));
    count.textContent = String(page.count);
    const last = Math.min(offset + page.data.length, page.count);
    pageInfo.textContent = page.count ? `${offset + 1}–${last} of ${page.count}` : "No reads";
    newer.disabled = offset === 0;
    older.disabled = last >= page.count;
  }

  async function loadCameras() {
    try {
      const cameras = await NB.api("/cameras");
      cameraRows.replaceChildren(...cameras.data.map(renderCamera));
      cameraCount.textContent = String(cameras.count);
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
  }

  purposeForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const kind = purposeForm.elements.kind.value;
    const reference = purposeForm.elements.reference.value.trim();
    if (!reference) {
      NB.say("Give the case or FIR number, alert id or a note.", { kind: "error" });
      return;
    }
    sessionStorage.setItem(
      PURPOSE_KEY,
      JSON.stringify({ token: (NB.token() || "").slice(-16), purpose: `${kind}:${reference}` }),
    );
    purposeForm.reset();
    offset = 0;
    load();
  });
  document.getElementById("purpose-change").addEventListener("click", forgetPurpose);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    offset = 0;
    load();
  });
  document.getElementById("clear").addEventListener("click", () => {
    form.reset();
    offset = 0;
    load();
  });
  newer.addEventListener("click", () => {
    offset = Math.max(0, offset - PAGE);
    load();
  });
  older.addEventListener("click", () => {
    offset += PAGE;
    load();
  });

  load();
  loadCameras();
})();
