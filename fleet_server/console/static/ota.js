/*
 * The OTA pages (docs/ota-server.md): artifacts (upload, list, delete unused)
 * and campaigns (create, list, one campaign's per-node progress with pause,
 * resume, retry-failed and abort). Everything goes through /api/v1/ota, which
 * decides who may do what; refusals show the server's message. Values are
 * written with textContent only. The open campaign refreshes every few
 * seconds so its progress can be watched.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }
  const page = document.body.dataset.otaPage;
  const REFRESH_MS = 3000;

  document.getElementById("whoami").textContent = NB.user();
  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));

  function cell(row, text, testid) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "—" : String(text);
    if (testid) {
      td.dataset.testid = testid;
    }
    row.append(td);
    return td;
  }

  function when(value) {
    return value ? new Date(value).toLocaleString() : "—";
  }

  function size(bytes) {
    if (bytes >= 1048576) {
      return `${(bytes / 1048576).toFixed(1)} MiB`;
    }
    if (bytes >= 1024) {
      return `${(bytes / 1024).toFixed(1)} KiB`;
    }
    return `${bytes} B`;
  }

  function list(text) {
    return text.split(",").map((s) => s.trim()).filter((s) => s);
  }

  function fail(err) {
    NB.say(err.message || String(err), { kind: "error" });
  }

  // ------------------------------------------------------------ artifacts

  async function loadArtifacts() {
    const body = await NB.api("/ota/artifacts?limit=500");
    const rows = document.getElementById("artifact-rows");
    rows.replaceChildren();
    document.getElementById("artifact-count").textContent = String(body.count);
    document.getElementById("no-artifacts").hidden = body.data.length > 0;
    for (const item of body.data) {
      const row = document.createElement("tr");
      row.dataset.testid = "artifact-row";
      row.dataset.artifactId = item.id;
      cell(row, item.kind, "artifact-kind");
      cell(row, item.name, "artifact-name");
      cell(row, item.version, "artifact-version");
      cell(row, item.hardware.join(", "), "artifact-hardware");
      cell(row, size(item.length), "artifact-size");
      const sha = cell(row, `${item.sha256.slice(0, 12)}…`, "artifact-sha256");
      sha.title = item.sha256;
      cell(row, `${when(item.created_at)} by ${item.created_by}`);
      const actions = cell(row, "");
      if (item.in_use) {
        actions.textContent = "in use";
      } else {
        const del = document.createElement("button");
        del.type = "button";
        del.className = "btn btn-small btn-warn";
        del.textContent = "Delete";
        del.dataset.testid = "artifact-delete";
        del.addEventListener("click", async () => {
          if (!window.confirm(`Delete ${item.name} ${item.version}?`)) {
            return;
          }
          try {
            await NB.api(`/ota/artifacts/${encodeURIComponent(item.id)}`, { method: "DELETE" });
            NB.say(`Deleted ${item.name} ${item.version}`);
            await loadArtifacts();
          } catch (err) {
            fail(err);
          }
        });
        actions.replaceChildren(del);
      }
      rows.append(row);
    }
  }

  async function upload(event) {
    event.preventDefault();
    const form = event.target;
    const data = new FormData(form);
    const submit = form.querySelector("[type=submit]");
    submit.disabled = true;
    try {
      // Multipart: NB.api sends JSON or urlencoded forms only.
      const response = await fetch(`${NB.apiBase}/ota/artifacts`, {
        method: "POST",
        headers: { Authorization: `Bearer ${NB.token()}`, Accept: "application/json" },
        body: data,
      });
      const payload = await response.json().catch(() => ({}));
      if (response.status === 401) {
        NB.signOut("expired");
        return;
      }
      if (!response.ok) {
        const detail = payload.detail;
        const text = detail && detail.message ? `${detail.message} (${detail.reason})`
          : typeof detail === "string" ? detail : `upload refused (${response.status})`;
        throw new Error(text);
      }
      NB.say(`Uploaded ${payload.name} ${payload.version} (${size(payload.length)})`);
      form.reset();
      await loadArtifacts();
    } catch (err) {
      fail(err);
    } finally {
      submit.disabled = false;
    }
  }

  // ------------------------------------------------------------ campaigns

  let openCampaign = new URLSearchParams(window.location.search).get("campaign");
  let timer = null;

  function progress(counts) {
    const order = ["pending", "offered", "downloading", "deferred", "installed", "healthy",
      "rolled_back", "failed"];
    return order.filter((s) => counts[s]).map((s) => `${s.replace("_", " ")} ${counts[s]}`)
      .join(" · ") || "—";
  }

  async function loadArtifactChoices() {
    const body = await NB.api("/ota/artifacts?limit=500");
    const select = document.querySelector("[name=artifact_id]");
    select.replaceChildren();
    for (const item of body.data) {
      const option = document.createElement("option");
      option.value = item.id;
      option.textContent = `${item.kind} ${item.name} ${item.version} (${item.hardware.join(", ")})`;
      select.append(option);
    }
  }

  async function loadCampaigns() {
    const body = await NB.api("/ota/campaigns?limit=500");
    const rows = document.getElementById("campaign-rows");
    rows.replaceChildren();
    document.getElementById("campaign-count").textContent = String(body.count);
    document.getElementById("no-campaigns").hidden = body.data.length > 0;
    for (const item of body.data) {
      const row = document.createElement("tr");
      row.dataset.testid = "campaign-row";
      row.dataset.campaignId = item.id;
      const name = cell(row, "");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "btn btn-quiet btn-small";
      open.textContent = item.name;
      open.dataset.testid = "campaign-open";
      open.addEventListener("click", () => {
        openCampaign = item.id;
        loadDetail().catch(fail);
      });
      name.append(open);
      cell(row, item.state, "campaign-state");
      cell(row, item.wave_index < 0 ? "—" : `${item.wave_index + 1} of ${item.waves.length}`);
      cell(row, progress(item.counts), "campaign-progress");
      cell(row, when(item.created_at));
      rows.append(row);
    }
  }

  async function loadDetail() {
    const section = document.getElementById("campaign-detail");
    if (!openCampaign) {
      section.hidden = true;
      return;
    }
    const item = await NB.api(`/ota/campaigns/${encodeURIComponent(openCampaign)}`);
    section.hidden = false;
    section.dataset.campaignId = item.id;
    document.getElementById("detail-name").textContent = item.name;
    document.getElementById("detail-state").textContent = item.state;
    document.getElementById("detail-state").dataset.state = item.state;
    document.getElementById("detail-reason").textContent = item.reason;
    document.getElementById("detail-downgrade").hidden = !item.downgrade;
    document.getElementById("detail-counts").textContent = progress(item.counts);
    for (const button of section.querySelectorAll("[data-action]")) {
      const action = button.dataset.action;
      button.hidden = !(
        (action === "pause" && item.state === "running")
        || (action === "resume" && item.state === "paused")
        || (action === "abort" && (item.state === "running" || item.state === "paused"))
        || (action === "retry-failed" && ((item.counts.failed || 0) + (item.counts.rolled_back || 0)) > 0)
      );
    }
    const rows = document.getElementById("node-rows");
    rows.replaceChildren();
    for (const node of item.nodes || []) {
      const row = document.createElement("tr");
      row.dataset.testid = "node-row";
      row.dataset.nodeId = node.node_id;
      row.dataset.state = node.state;
      cell(row, node.node_id);
      cell(row, node.wave === null ? "next" : String(node.wave + 1));
      cell(row, node.state.replace("_", " "), "node-state");
      cell(row, node.detail || "", "node-detail");
      cell(row, node.attempt);
      cell(row, when(node.updated_at));
      rows.append(row);
    }
  }

  async function act(action) {
    if (action === "abort" && !window.confirm("Abort this campaign? No further wave will start.")) {
      return;
    }
    try {
      await NB.api(`/ota/campaigns/${encodeURIComponent(openCampaign)}/${action}`, {
        method: "POST",
      });
      await Promise.all([loadCampaigns(), loadDetail()]);
    } catch (err) {
      fail(err);
    }
  }

  async function createCampaign(event) {
    event.preventDefault();
    const form = event.target;
    const value = (name) => form.elements[name].value;
    const waves = list(value("waves")).map((p, i, all) => ({
      name: i === 0 ? "canary" : i === all.length - 1 ? "all" : `wave-${i + 1}`,
      percent: Number(p),
    }));
    const body = {
      name: value("name"),
      artifact_id: value("artifact_id"),
      target: {
        districts: list(value("districts")),
        sites: list(value("sites")),
        tags: list(value("tags")),
        node_ids: list(value("node_ids")),
      },
      waves,
      min_sample: Number(value("min_sample")),
      failure_threshold: Number(value("failure_threshold")) / 100,
      downgrade: form.elements.downgrade.checked,
    };
    try {
      const created = await NB.api("/ota/campaigns", { method: "POST", json: body });
      NB.say(`Campaign ${created.name} started for ${created.nodes.length} node(s)`);
      openCampaign = created.id;
      await Promise.all([loadCampaigns(), loadDetail()]);
    } catch (err) {
      fail(err);
    }
  }

  function refreshSoon() {
    window.clearTimeout(timer);
    timer = window.setTimeout(async () => {
      try {
        await Promise.all([loadCampaigns(), loadDetail()]);
      } catch (err) {
        fail(err);
      }
      refreshSoon();
    }, REFRESH_MS);
  }

  if (page === "artifacts") {
    document.getElementById("upload-form").addEventListener("submit", upload);
    loadArtifacts().catch(fail);
  } else if (page === "campaigns") {
    document.getElementById("campaign-form").addEventListener("submit", createCampaign);
    for (const button of document.querySelectorAll("[data-action]")) {
      button.addEventListener("click", () => act(button.dataset.action));
    }
    Promise.all([loadArtifactChoices(), loadCampaigns(), loadDetail()]).catch(fail);
    refreshSoon();
  }
})();
