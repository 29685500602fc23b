/*
 * The API tokens page: a fleet admin lists the tokens issued to other
 * agencies' systems (system, agency, role, districts, expiry, last use,
 * revoked), issues one and revokes one, through the API (GET/POST
 * /api-tokens, POST /api-tokens/{id}/revoke).
 *
 * The secret is in the answer that issues a token and nowhere else: the page
 * shows it once, in its own panel, and forgets it when the admin says it has
 * been copied (or on any reload). It is never put in the table, a message or
 * storage. The guard is the API, which answers 403 to anyone but an
 * every-district admin; the page shows that refusal and nothing else.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const rows = document.getElementById("token-rows");
  const count = document.getElementById("token-count");
  const empty = document.getElementById("tokens-empty");
  const refused = document.getElementById("tokens-refused");
  const refusedText = document.getElementById("tokens-refused-text");
  const newToken = document.getElementById("new-token");
  const tokenList = document.getElementById("token-list");
  const form = document.getElementById("apitoken-form");
  const secret = document.getElementById("token-secret");
  const secretFor = document.getElementById("token-secret-for");
  const secretValue = document.getElementById("token-secret-value");
  const revokeDialog = document.getElementById("revoke-dialog");
  const revokeForm = document.getElementById("revoke-form");
  const revokeTitle = document.getElementById("revoke-title");
  let revokeFor = null;

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));
  document.getElementById("refresh").addEventListener("click", () => load());

  function when(iso) {
    if (!iso) {
      return "never";
    }
    const at = new Date(iso);
    return Number.isNaN(at.getTime())
      ? "—"
      : at.toLocaleString(undefined, {
          year: "numeric",
          month: "short",
          day: "numeric",
          hour: "2-digit",
          minute: "2-digit",
        });
  }

  function status(token) {
    if (token.revoked_at) {
      return "revoked";
    }
    return new Date(token.expires_at).getTime() <= Date.now() ? "expired" : "active";
  }

  function cell(row, content, { className, testid } = {}) {
    const td = document.createElement("td");
    if (className) {
      td.className = className;
    }
    if (testid) {
      td.dataset.testid = testid;
    }
    if (typeof content === "string") {
      td.textContent = content;
    } else {
      td.append(content);
    }
    row.append(td);
    return td;
  }

  /* "a, b ,c" → ["a", "b", "c"]; empty → null (every district). */
  function districtList(text) {
    const names = String(text || "")
      .split(",")
      .map((name) => name.trim())
      .filter(Boolean);
    return names.length ? names : null;
  }

  function render(token) {
    const state = status(token);
    const row = document.createElement("tr");
    row.dataset.testid = "token-row";
    row.dataset.name = token.name;
    row.dataset.id = String(token.id);
    row.dataset.status = state;
    cell(row, token.name, { className: "token-name", testid: "token-row-name" });
    cell(row, `${token.agency} · ${token.role}`, { testid: "token-row-agency" });
    cell(row, token.districts ? token.districts.join(", ") : "every district", {
      testid: "token-row-districts",
    });
    // On a phone the table has no header row: these two say what they are (api_tokens.css).
    cell(row, when(token.expires_at), { testid: "token-row-expires" }).dataset.label = "Expires";
    cell(row, when(token.last_used_at), { testid: "token-row-last-used" }).dataset.label =
      "Last used";
    const badge = NB.el("span", {
      text: state === "revoked" ? `revoked ${when(token.revoked_at)}` : state,
      className: `badge badge-token-${state}`,
      testid: "token-row-status",
    });
    cell(row, badge);
    const actions = document.createElement("div");
    if (state !== "revoked") {
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "btn btn-small btn-warn";
      revoke.dataset.testid = "token-revoke";
      revoke.textContent = "Revoke";
      revoke.setAttribute("aria-label", `Revoke the token of ${token.name}`);
      revoke.addEventListener("click", () => openRevoke(token));
      actions.append(revoke);
    }
    cell(row, actions, { className: "token-actions-cell" });
    return row;
  }

  function openRevoke(token) {
    revokeFor = token;
    revokeTitle.textContent = `Revoke the token of ${token.name} (${token.agency})?`;
    revokeDialog.showModal();
  }

  revokeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = revokeFor;
    revokeDialog.close();
    try {
      await NB.api(`/api-tokens/${token.id}/revoke`, { method: "POST" });
      NB.say(`The token of ${token.name} is revoked: it is refused from now on.`);
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
    await load();
  });
  document.getElementById("revoke-cancel").addEventListener("click", () => revokeDialog.close());

  function showSecret(made) {
    secretFor.textContent = `${made.name} (${made.agency})`;
    secretValue.value = made.token;
    secret.hidden = false;
    secret.focus();
    secretValue.select();
  }

  function forgetSecret() {
    secretValue.value = "";
    secretFor.textContent = "";
    secret.hidden = true;
  }
  document.getElementById("token-secret-done").addEventListener("click", () => {
    forgetSecret();
    document.getElementById("token-name").focus();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      name: String(data.get("name") || "").trim(),
      agency: String(data.get("agency") || "").trim(),
      role: String(data.get("role")),
      ttl_days: Number(data.get("ttl_days")),
    };
    const districts = districtList(data.get("districts"));
    if (districts) {
      body.districts = districts;
    }
    if (!body.name || !body.agency) {
      NB.say("Name the system and its agency.", { kind: "error" });
      return;
    }
    if (!Number.isInteger(body.ttl_days) || body.ttl_days < 1 || body.ttl_days > 366) {
      NB.say("A token expires after 1 to 366 days.", { kind: "error" });
      return;
    }
    forgetSecret();
    try {
      const made = await NB.api("/api-tokens", { method: "POST", json: body });
      form.reset();
      NB.say(`Issued a token for ${made.name}, expiring ${when(made.expires_at)}.`);
      await load();
      showSecret(made);
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
  });

  async function load() {
    let page;
    try {
      page = await NB.api("/api-tokens");
    } catch (err) {
      if (err.status === 403) {
        refused.hidden = false;
        newToken.hidden = true;
        tokenList.hidden = true;
        forgetSecret();
        refusedText.textContent = `The server refused: ${err.message}`;
      } else {
        NB.say(err.message, { kind: "error" });
      }
      return;
    }
    refused.hidden = true;
    newToken.hidden = false;
    tokenList.hidden = false;
    count.textContent = String(page.count);
    empty.hidden = page.count > 0;
    rows.replaceChildren(...page.data.map(render));
  }

  NBLayout.me.then(() => load());
})();
