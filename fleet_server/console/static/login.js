/*
 * Sign-in page: posts the OAuth2 password form to the API and keeps the
 * returned bearer token for this tab (see common.js), then opens the queue.
 */
"use strict";

(() => {
  const REASONS = {
    expired: "Your session has ended. Please sign in again.",
    "signed-out": "You are signed out.",
  };
  const form = document.getElementById("login-form");
  const submit = form.querySelector("button[type=submit]");
  const reason = new URLSearchParams(window.location.search).get("reason");
  if (reason && REASONS[reason]) {
    NB.say(REASONS[reason], { kind: reason === "expired" ? "error" : "info" });
  }
  if (NB.token()) {
    window.location.replace(NB.queueUrl);
    return;
  }
  document.getElementById("username").focus();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = form.username.value.trim();
    const password = form.password.value;
    if (!username || !password) {
      NB.say("Enter your user name and password.", { kind: "error" });
      return;
    }
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      const reply = await NB.api("/login/access-token", {
        method: "POST",
        form: { username, password, grant_type: "password" },
        auth: false,
      });
      if (!reply || !reply.access_token) {
        throw new NB.ApiError(500, "The server did not return a token.");
      }
      NB.saveSession(reply.access_token, username, reply.expires_at);
      window.location.replace(NB.queueUrl);
    } catch (err) {
      NB.say(err.message, { kind: "error" });
      form.password.value = "";
      form.password.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = "Sign in";
    }
  });
})();
