/*
 * The Users and roles page: a fleet admin lists users, creates them, changes
 * a role, disables or enables an account and resets a password, through the
 * API (GET/POST /users, PATCH /users/{id}, POST /users/{id}/password).
 *
 * The page shell is public like every console page; the guard is the API,
 * which answers 403 to anyone but an admin. The page shows that refusal and
 * nothing else. Rules the server enforces (the last active admin stays, no
 * admin disables their own account) come back as its message, shown as is.
 */
"use strict";

(() => {
  if (!NB.requireSession()) {
    return;
  }

  const ROLES = ["operator", "technician", "admin", "auditor"];
  const rows = document.getElementById("user-rows");
  const count = document.getElementById("user-count");
  const refused = document.getElementById("users-refused");
  const refusedText = document.getElementById("refused-text");
  const newUser = document.getElementById("new-user");
  const userList = document.getElementById("user-list");
  const form = document.getElementById("user-form");
  const newRole = document.getElementById("new-role");
  const dialog = document.getElementById("password-dialog");
  const dialogForm = document.getElementById("password-form");
  const dialogTitle = document.getElementById("password-title");
  const resetInput = document.getElementById("reset-password");
  const resetError = document.getElementById("password-error");
  const scopeDialog = document.getElementById("scope-dialog");
  const scopeForm = document.getElementById("scope-form");
  const scopeTitle = document.getElementById("scope-title");
  const scopeAgency = document.getElementById("scope-agency");
  const scopeDistricts = document.getElementById("scope-districts");
  const scopeAll = document.getElementById("scope-all");
  let resetFor = null;
  let scopeFor = null;
  let myId = null;

  document.getElementById("logout").addEventListener("click", () => NB.signOut("signed-out"));
  document.getElementById("refresh").addEventListener("click", () => load());

  for (const role of ROLES) {
    const option = document.createElement("option");
    option.value = role;
    option.textContent = role;
    newRole.append(option);
  }

  function when(iso) {
    const at = new Date(iso);
    return Number.isNaN(at.getTime())
      ? "—"
      : at.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
  }

  function cell(row, content, className) {
    const td = document.createElement("td");
    if (className) {
      td.className = className;
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

  function scopeText(user) {
    const districts = user.districts ? user.districts.join(", ") : "every district";
    return user.agency ? `${user.agency} · ${districts}` : districts;
  }

  function button(text, testid, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-small";
    b.dataset.testid = testid;
    b.textContent = text;
    b.addEventListener("click", onClick);
    return b;
  }

  async function change(user, body, done) {
    try {
      const updated = await NB.api(`/users/${user.id}`, { method: "PATCH", json: body });
      NB.say(done(updated));
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
    await load();
  }

  function render(user) {
    const row = document.createElement("tr");
    row.dataset.testid = "user-row";
    row.dataset.username = user.username;
    row.dataset.active = String(user.is_active);
    const name = document.createElement("span");
    name.className = "user-name";
    name.textContent = user.username;
    const nameCell = cell(row, name);
    if (user.id === myId) {
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = "(you)";
      nameCell.append(you);
    }

    const role = document.createElement("select");
    role.dataset.testid = "user-role";
    role.setAttribute("aria-label", `Role of ${user.username}`);
    for (const r of ROLES) {
      const option = document.createElement("option");
      option.value = r;
      option.textContent = r;
      option.selected = r === user.role;
      role.append(option);
    }
    role.addEventListener("change", () =>
      change(user, { role: role.value }, (u) => `${u.username} is now ${u.role}.`),
    );
    cell(row, role);

    const status = document.createElement("span");
    status.className = `badge ${user.is_active ? "badge-active" : "badge-disabled"}`;
    status.dataset.testid = "user-status";
    status.textContent = user.is_active ? "active" : "disabled";
    cell(row, status);
    const scope = cell(row, scopeText(user), "user-scope");
    scope.dataset.testid = "user-scope";
    cell(row, when(user.created_at));

    const actions = document.createElement("div");
    actions.className = "user-actions";
    const toggle = button(
      user.is_active ? "Disable" : "Enable",
      user.is_active ? "user-disable" : "user-enable",
      () =>
        change(user, { is_active: !user.is_active }, (u) =>
          u.is_active ? `${u.username} can sign in again.` : `${u.username} is disabled.`,
        ),
    );
    toggle.setAttribute("aria-label", `${user.is_active ? "Disable" : "Enable"} ${user.username}`);
    const reset = button("Reset password", "user-reset", () => openReset(user));
    reset.setAttribute("aria-label", `Reset the password of ${user.username}`);
    const editScope = button("Scope", "user-scope-edit", () => openScope(user));
    editScope.setAttribute("aria-label", `Change the scope of ${user.username}`);
    actions.append(toggle, reset, editScope);
    cell(row, actions, "user-actions-cell");
    return row;
  }

  function openReset(user) {
    resetFor = user;
    dialogTitle.textContent = `Reset the password of ${user.username}`;
    resetInput.value = "";
    resetError.hidden = true;
    dialog.showModal();
    resetInput.focus();
  }

  function openScope(user) {
    scopeFor = user;
    scopeTitle.textContent = `Scope of ${user.username}`;
    scopeAgency.value = user.agency || "";
    scopeDistricts.value = user.districts ? user.districts.join(", ") : "";
    scopeAll.checked = !user.districts;
    scopeDistricts.disabled = scopeAll.checked;
    scopeDialog.showModal();
    scopeAgency.focus();
  }

  scopeAll.addEventListener("change", () => {
    scopeDistricts.disabled = scopeAll.checked;
  });

  scopeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = scopeFor;
    const districts = districtList(scopeDistricts.value);
    const body = scopeAll.checked || !districts ? { all_districts: true } : { districts };
    if (scopeAgency.value.trim()) {
      body.agency = scopeAgency.value.trim();
    }
    scopeDialog.close();
    await change(user, body, (u) => `${u.username} now sees ${scopeText(u)}.`);
  });
  document.getElementById("scope-cancel").addEventListener("click", () => scopeDialog.close());

  dialogForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (resetInput.value.length < 8) {
      resetError.hidden = false;
      resetInput.focus();
      return;
    }
    const user = resetFor;
    try {
      await NB.api(`/users/${user.id}/password`, {
        method: "POST",
        json: { password: resetInput.value },
      });
      dialog.close();
      NB.say(`New password set for ${user.username}.`);
    } catch (err) {
      resetError.textContent = err.message;
      resetError.hidden = false;
    }
  });
  document.getElementById("password-cancel").addEventListener("click", () => dialog.close());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      username: String(data.get("username") || "").trim(),
      role: String(data.get("role")),
      password: String(data.get("password") || ""),
    };
    const agency = String(data.get("agency") || "").trim();
    if (agency) {
      body.agency = agency;
    }
    const districts = districtList(data.get("districts"));
    if (districts) {
      body.districts = districts;
    }
    if (!body.username) {
      NB.say("Give the new user a name.", { kind: "error" });
      return;
    }
    if (body.password.length < 8) {
      NB.say("The first password needs 8 characters or more.", { kind: "error" });
      return;
    }
    try {
      const made = await NB.api("/users", { method: "POST", json: body });
      form.reset();
      NB.say(`Created ${made.username} (${made.role}).`);
    } catch (err) {
      NB.say(err.message, { kind: "error" });
    }
    await load();
  });

  async function load() {
    let page;
    try {
      page = await NB.api("/users");
    } catch (err) {
      if (err.status === 403) {
        refused.hidden = false;
        newUser.hidden = true;
        userList.hidden = true;
        refusedText.textContent = `The server refused: ${err.message}`;
      } else {
        NB.say(err.message, { kind: "error" });
      }
      return;
    }
    refused.hidden = true;
    newUser.hidden = false;
    userList.hidden = false;
    count.textContent = String(page.count);
    rows.replaceChildren(...page.data.map(render));
  }

  NBLayout.me.then((me) => {
    myId = me ? me.id : null;
    load();
  });
})();
