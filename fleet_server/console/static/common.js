/*
 * Shared by every console page: where the token lives, how the API is called,
 * and how messages reach the operator.
 *
 * The bearer token is kept in sessionStorage: it belongs to this tab only, is
 * gone when the tab closes, and the browser never attaches it to a request by
 * itself (so there is nothing for a cross-site request to ride on). Pages are
 * served with a CSP that forbids inline and foreign script, and every value
 * from the API is written with textContent, never as HTML.
 */
"use strict";

const NB = (() => {
  const body = document.body;
  const apiBase = body.dataset.apiBase;
  const loginUrl = body.dataset.loginUrl;
  const queueUrl = body.dataset.queueUrl;
  const TOKEN_KEY = "nigehbaan.token";
  const USER_KEY = "nigehbaan.user";
  const EXPIRES_KEY = "nigehbaan.expires";
  const MAX_MESSAGES = 5;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function user() {
    return sessionStorage.getItem(USER_KEY) || "";
  }

  function saveSession(accessToken, username, expiresAt) {
    sessionStorage.setItem(TOKEN_KEY, accessToken);
    sessionStorage.setItem(USER_KEY, username);
    if (expiresAt) {
      sessionStorage.setItem(EXPIRES_KEY, expiresAt);
    }
  }

  /* Send the operator to the sign-in page when the token's lifetime ends,
   * rather than letting the feed fail silently. */
  function watchExpiry() {
    const expires = Date.parse(sessionStorage.getItem(EXPIRES_KEY) || "");
    if (Number.isNaN(expires)) {
      return;
    }
    const remaining = expires - Date.now();
    if (remaining <= 0) {
      signOut("expired");
    } else if (remaining < 2 ** 31 - 1) {
      window.setTimeout(() => signOut("expired"), remaining);
    }
  }

  /* Every signed-in page starts here: no session → the sign-in page; a session
   * → signed out again when its token expires. False when the page must stop.
   * No session is not "signed out": on a first visit there was nothing to end,
   * so the sign-in page opens without a message. */
  function requireSession() {
    if (!token()) {
      signOut();
      return false;
    }
    watchExpiry();
    return true;
  }

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    sessionStorage.removeItem(EXPIRES_KEY);
    const url = reason ? `${loginUrl}?reason=${encodeURIComponent(reason)}` : loginUrl;
    window.location.replace(url);
  }

  /* The text of a FastAPI error body: `detail` is a string for HTTPException
   * and a list of {loc, msg} for validation errors. */
  function errorText(status, payload, fallback) {
    const detail = payload && payload.detail;
    if (typeof detail === "string" && detail) {
      return detail;
    }
    /* Provisioning refusals: {"reason": CODE, "message": TEXT}. */
    if (detail && typeof detail === "object" && !Array.isArray(detail) && detail.message) {
      return detail.reason ? `${detail.message} (${detail.reason})` : String(detail.message);
    }
    if (Array.isArray(detail) && detail.length) {
      return detail
        .map((item) => {
          const loc = Array.isArray(item.loc) ? item.loc.filter((p) => p !== "body").join(".") : "";
          return loc ? `${loc}: ${item.msg}` : String(item.msg);
        })
        .join("; ");
    }
    return `${fallback || "Request failed"} (HTTP ${status})`;
  }

  async function readJson(response) {
    const text = await response.text();
    if (!text) {
      return null;
    }
    try {
      return JSON.parse(text);
    } catch (_err) {
      return { detail: text.slice(0, 200) };
    }
  }

  /* Call the API with the session's token. A 401 means the token expired or
   * was revoked: back to the sign-in page, saying why. */
  async function api(path, { method = "GET", json, form, auth = true, headers: extra } = {}) {
    const headers = { Accept: "application/json", ...(extra || {}) };
    let requestBody;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      requestBody = JSON.stringify(json);
    } else if (form !== undefined) {
      requestBody = new URLSearchParams(form);
    }
    if (auth) {
      const current = token();
      if (!current) {
        signOut("signed-out");
        throw new ApiError(401, "Not signed in");
      }
      headers.Authorization = `Bearer ${current}`;
    }
    let response;
    try {
      response = await fetch(`${apiBase}${path}`, { method, headers, body: requestBody });
    } catch (_err) {
      throw new ApiError(0, "The fleet server cannot be reached. Check the network and try again.");
    }
    const payload = await readJson(response);
    if (response.status === 401 && auth) {
      signOut("expired");
      throw new ApiError(401, "Your session has ended. Please sign in again.");
    }
    if (!response.ok) {
      throw new ApiError(response.status, errorText(response.status, payload, response.statusText));
    }
    return payload;
  }

  /* Messages: errors stay until dismissed; information fades after a while. */
  function say(text, { kind = "info", ttlMs = 8000 } = {}) {
    const area = document.getElementById("messages");
    if (!area) {
      return;
    }
    const item = document.createElement("div");
    item.className = `message message-${kind}`;
    item.dataset.testid = kind === "error" ? "message-error" : "message-info";
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    const textNode = document.createElement("span");
    textNode.className = "message-text";
    textNode.textContent = text;
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "message-dismiss";
    dismiss.setAttribute("aria-label", "Dismiss message");
    dismiss.textContent = "×";
    dismiss.addEventListener("click", () => item.remove());
    item.append(textNode, dismiss);
    area.prepend(item);
    while (area.children.length > MAX_MESSAGES) {
      area.lastElementChild.remove();
    }
    if (kind !== "error") {
      window.setTimeout(() => item.remove(), ttlMs);
    }
  }

  /* An element with text (never HTML), a class and a test id: how pages build their rows. */
  function el(tag, { text, className, testid } = {}) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) {
      node.textContent = text;
    }
    if (className) {
      node.className = className;
    }
    if (testid) {
      node.dataset.testid = testid;
    }
    return node;
  }

  return {
    ApiError,
    api,
    apiBase,
    el,
    loginUrl,
    queueUrl,
    token,
    user,
    requireSession,
    saveSession,
    signOut,
    say,
    watchExpiry,
  };
})();
