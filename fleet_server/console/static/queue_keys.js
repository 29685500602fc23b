/*
 * The alert queue without a mouse (loaded after queue.js by queue.html).
 *
 * With 500 open alerts, Tab through every row's buttons is thousands of
 * stops, so the table is one stop with a roving focus: Tab lands on the
 * current alert row (then its own buttons, then out of the table), the arrow keys (or j/k) move between visible rows,
 * Home/End jump to the top or bottom, and a letter acts on the row by pressing
 * its own button — A acknowledge, D dispatch, S on scene, R resolve, F false
 * alarm (both ask for the reason first), H its history; Enter moves into the
 * row's buttons. Only buttons the row shows can be pressed, so the keys
 * follow the same lifecycle table as the mouse. "/" jumps to the search box.
 *
 * queue.js replaces a row when its alert changes; if the focused row is
 * replaced, focus moves to the new row of the same alert (or its neighbour),
 * so an operator acknowledging with A stays where they were.
 */
"use strict";

(() => {
  const rows = document.getElementById("alert-rows");
  const search = document.getElementById("filter-search");
  if (!rows) {
    return;
  }
  const ROW = 'tr[data-testid="alert-row"]';
  const KEYS = {
    a: "action-acknowledged",
    d: "action-dispatched",
    s: "action-on_scene",
    r: "action-resolved",
    f: "action-false_alarm",
    h: "action-details",
  };
  let currentId = null;
  let currentIndex = 0;
  let focusInside = false;

  function visible() {
    return [...rows.querySelectorAll(ROW)].filter((row) => !row.hidden);
  }

  function describe(row) {
    const text = (testid) => {
      const el = row.querySelector(`[data-testid="${testid}"]`);
      return el ? el.textContent.trim() : "";
    };
    const keys = Object.entries(KEYS)
      .filter(([, testid]) => row.querySelector(`[data-testid="${testid}"]`))
      .map(([key]) => key.toUpperCase());
    row.setAttribute(
      "aria-label",
      `${text("alert-priority")} ${text("alert-type")} alert at ${text("alert-node")}, ` +
        `${text("alert-state")}, ${text("alert-age")}`,
    );
    row.setAttribute("aria-keyshortcuts", [...keys, "Enter"].join(" "));
  }

  /* Exactly one visible row is reachable by Tab: the current one. */
  function rove() {
    const shown = visible();
    let current = shown.find((row) => row.dataset.alertId === currentId);
    if (!current && shown.length) {
      current = shown[Math.min(currentIndex, shown.length - 1)];
      currentId = current.dataset.alertId;
    }
    for (const row of rows.querySelectorAll(ROW)) {
      const tabIndex = row === current ? 0 : -1;
      row.tabIndex = tabIndex;
      // Only the current row's buttons are Tab stops; Enter reaches them too.
      for (const button of row.querySelectorAll("button")) {
        button.tabIndex = tabIndex;
      }
      describe(row);
    }
    if (current) {
      currentIndex = shown.indexOf(current);
    }
    return current;
  }

  function focusRow(row) {
    if (!row) {
      return;
    }
    currentId = row.dataset.alertId;
    rove();
    row.focus();
    row.scrollIntoView({ block: "nearest" });
  }

  new MutationObserver(() => {
    const current = rove();
    // The focused row was replaced or removed: keep the operator's place.
    if (focusInside && current && !rows.contains(document.activeElement)) {
      current.focus();
    }
  }).observe(rows, { childList: true, subtree: true, attributes: true, attributeFilter: ["hidden"] });

  rows.addEventListener("focusin", (event) => {
    focusInside = true;
    const row = event.target.closest(ROW);
    if (row && row.dataset.alertId !== currentId) {
      currentId = row.dataset.alertId;
      rove();
    }
  });
  rows.addEventListener("focusout", (event) => {
    // relatedTarget is null when the focused row was removed from the page.
    if (event.relatedTarget && !rows.contains(event.relatedTarget)) {
      focusInside = false;
    }
  });

  rows.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    const row = event.target.closest(ROW);
    if (!row) {
      return;
    }
    const onRow = event.target === row;
    const shown = visible();
    const at = shown.indexOf(row);
    const key = event.key;
    let target = null;
    if (key === "ArrowDown" || (onRow && key === "j")) {
      target = shown[Math.min(at + 1, shown.length - 1)];
    } else if (key === "ArrowUp" || (onRow && key === "k")) {
      target = shown[Math.max(at - 1, 0)];
    } else if (key === "Home" && onRow) {
      target = shown[0];
    } else if (key === "End" && onRow) {
      target = shown[shown.length - 1];
    } else if (key === "Escape" && !onRow) {
      target = row;
    } else if (onRow && key === "Enter") {
      const first = row.querySelector("button:not([disabled])");
      if (first) {
        event.preventDefault();
        first.focus();
      }
      return;
    } else if (onRow && KEYS[key.toLowerCase()]) {
      const button = row.querySelector(`[data-testid="${KEYS[key.toLowerCase()]}"]`);
      event.preventDefault();
      if (button && !button.disabled) {
        button.click();
      } else {
        NB.say(`This alert has no "${key.toUpperCase()}" action in its state.`);
      }
      return;
    } else {
      return;
    }
    event.preventDefault();
    focusRow(target);
  });

  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, textarea, select, dialog");
    if (event.key === "/" && !typing && search) {
      event.preventDefault();
      search.focus();
    }
  });

  rove();
})();
