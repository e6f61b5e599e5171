// Abandoned calls and their one-click call-backs (docs/supervision.md, "API"), shared by the supervision
// page (a tab with a date range) and the call-taker console (a compact panel, the last 24 hours).
//
// `GET /api/abandoned` lists the callers who hung up before an answer, each with its call-backs;
// `POST /api/calls/{id}/callback` rings the requester's own softphone (a supervisor without one: the
// overflow line), then the citizen. How it went arrives as `{"type": "callback", "callback": {...}}` on
// the page's WebSocket, maybe for a call-back someone else asked for: the page routes those messages
// to `onCallbackMessage`.
//
// Design choices:
// - One list object per page (`abandonedList(...)`), holding its own rows and the live call-back
//   status of each call; that status survives a list reload, so a reload in the middle of a call-back
//   never re-enables its button.
// - Texts are built at render time from codes, so a language switch re-labels what is on screen.
// - Built with DOM APIs only (no innerHTML): a number or a server message never becomes markup.
//
// The small DOM and format helpers at the end are exported: the supervision page builds its other
// views with them too.

import { api } from "./api.js";
import { codeLabel, fmtDate, t } from "./i18n.js";

// Call-back outcomes that mean "still dialling": the button stays disabled meanwhile.
const CB_PENDING = new Set(["requesting", "pending", "calling"]);

/**
 * The abandoned list rendered into `body` (a `<tbody>`).
 *
 * - `error`: the element that shows a failed load (hidden otherwise);
 * - `form`: optional filter form (`from`/`to` dates); without it the server's default, the last 24 h;
 * - `compact`: three columns (number with the time under it, wait, call-back) for a narrow panel,
 *   instead of the five of the supervision page (arrived, number, wait, call-back status, button);
 * - `onRender(rows)`: called after every render (e.g. to show a count).
 */
export function abandonedList({ body, error, form = null, compact = false, onRender = null }) {
  const st = {
    rows: null, // the last list the server gave, null before the first load
    live: new Map(), // call_id -> {outcome, callback?, message?}: survives a list reload
    loading: null, // the load in flight: a second load waits for it, then runs once more
    again: false,
  };

  async function fetchRows() {
    // Bare dates: the server reads them as the centre's local days, the same days the statistics use.
    const query = form ? formParams(form).toString() : "";
    try {
      const data = await api("GET", `/api/abandoned${query ? `?${query}` : ""}`);
      st.rows = Array.isArray(data) ? data : data?.abandoned || data?.calls || [];
      if (form) markFields(form);
      showError(error, null);
      render();
    } catch (err) {
      if (form) markFields(form, err.body?.fields);
      if (err.status !== 401) showError(error, err); // a lost session shows the login instead
    }
  }

  /** Read the list; calls during a read are folded into one more read after it. */
  async function load() {
    if (st.loading) {
      st.again = true;
      return st.loading;
    }
    st.loading = (async () => {
      do {
        st.again = false;
        await fetchRows();
      } while (st.again);
    })();
    try {
      await st.loading;
    } finally {
      st.loading = null;
    }
  }

  function statusOf(a) {
    const live = st.live.get(String(a.call_id));
    if (live) return { outcome: live.outcome, text: liveText(live) };
    const last = (a.callbacks || []).at(-1);
    return { outcome: last?.outcome || "none", text: cbText(last) || "–" };
  }

  function row(a) {
    const { outcome, text } = statusOf(a);
    const status = h("span", { class: `cb-status cb-${outcome}`, role: "status", dataset: { testid: `callback-status-${a.call_id}` } }, text);
    const tries = (a.callbacks || []).length > 1 ? h("span", { class: "muted" }, ` (${t("ab.tries", { n: a.callbacks.length })})`) : null;
    const btn = a.number
      ? h("button", { type: "button", class: "btn btn-primary btn-small", dataset: { testid: `abandoned-callback-${a.call_id}` } }, t("ab.callback"))
      : null;
    if (btn) {
      btn.addEventListener("click", () => requestCallback(a.call_id, btn));
      btn.disabled = CB_PENDING.has(outcome);
    }
    const number = h("span", { class: a.number ? "mono" : "muted" }, a.number || t("pop.withheld"));
    if (compact) {
      return h("tr", { dataset: { callId: a.call_id, testid: "abandoned-row" } },
        h("td", {}, h("div", { class: "ab-number" }, number), h("div", { class: "muted small" }, fmtDate(a.arrived_at))),
        h("td", { class: "num", dataset: { testid: "abandoned-wait" } }, fmtDur(a.wait_seconds)),
        h("td", { class: "ab-action" }, btn, h("div", {}, status, tries)));
    }
    return h("tr", { dataset: { callId: a.call_id, testid: "abandoned-row" } },
      h("td", {}, fmtDate(a.arrived_at)),
      h("td", {}, number),
      h("td", { class: "num", dataset: { testid: "abandoned-wait" } }, fmtDur(a.wait_seconds)),
      h("td", {}, status, tries),
      h("td", {}, btn));
  }

  function render() {
    if (!st.rows) return;
    body.replaceChildren(...st.rows.map(row));
    if (!st.rows.length) body.append(h("tr", {}, h("td", { colspan: compact ? 3 : 5, class: "muted" }, t("ab.empty"))));
    onRender?.(st.rows);
  }

  function setStatus(callId, live) {
    st.live.set(String(callId), live);
    const id = CSS.escape(String(callId));
    const el = body.querySelector(`[data-testid="callback-status-${id}"]`);
    if (el) {
      el.textContent = liveText(live);
      el.className = `cb-status cb-${live.outcome}`;
    }
    const btn = body.querySelector(`[data-testid="abandoned-callback-${id}"]`);
    if (btn) btn.disabled = CB_PENDING.has(live.outcome);
  }

  async function requestCallback(callId, btn) {
    btn.disabled = true; // one click = one call to the citizen; a double click must not dial twice
    setStatus(callId, { outcome: "requesting" });
    try {
      const res = await api("POST", `/api/calls/${encodeURIComponent(callId)}/callback`, {});
      // The WebSocket may already have said how it went: a late answer must not bring back "calling".
      if (st.live.get(String(callId))?.outcome !== "requesting") return;
      const cb = res?.callback || {};
      setStatus(callId, { outcome: cb.outcome || "calling", callback: cb });
    } catch (err) {
      const message = err.status === 0 ? t("error.network") : err.body?.message || err.body?.error || t("error.generic", { s: err.status });
      setStatus(callId, { outcome: "error", message });
    }
  }

  /** `{"type": "callback", ...}`: the outcome of an Originate, maybe for a call-back someone else asked for. */
  function onCallbackMessage(msg) {
    const cb = msg.callback || msg;
    const id = cb.call_id ?? msg.call_id;
    if (id == null) return;
    setStatus(id, { outcome: cb.outcome || "pending", callback: cb });
  }

  /** Forget everything (a logout): the next user starts from an empty list. */
  function reset() {
    st.rows = null;
    st.live.clear();
    body.replaceChildren();
    showError(error, null);
  }

  return { load, render, onCallbackMessage, reset, get rows() { return st.rows; } };
}

function cbText(cb) {
  if (!cb) return "";
  const outcome = cb.outcome || "pending";
  return `${codeLabel(outcome, "cb")}${cb.requested_at ? ` · ${fmtDate(cb.requested_at, false)}` : ""}`;
}

function liveText(live) {
  if (live.message) return live.message;
  if (live.outcome === "requesting") return t("cb.requesting");
  return cbText({ ...(live.callback || {}), outcome: live.outcome });
}

// ---------------------------------------------------------------- small helpers (both pages)

/** `h("td", {class: "x", dataset: {testid: "y"}}, child...)`; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c != null && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

/** Seconds as m:ss (h:mm:ss past an hour): the format a wall screen reads at a glance. */
export function fmtDur(sec) {
  if (sec == null || Number.isNaN(Number(sec))) return "–";
  const total = Math.max(0, Math.round(Number(sec)));
  const hh = Math.floor(total / 3600);
  const mm = Math.floor((total % 3600) / 60);
  const ss = String(total % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

/** Show a failed request in `el` (hidden when `err` is null). */
export function showError(el, err) {
  el.hidden = !err;
  if (!err) return;
  el.textContent =
    err.status === 0 ? t("error.network")
      : err.status === 422 && err.body?.fields ? t("intake.invalid") // the inputs at fault are marked
        : err.body?.message || t("error.generic", { s: err.status });
}

/** The filled-in fields of a filter form as query parameters. */
export function formParams(form) {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (String(v).trim()) params.set(k, String(v).trim());
  return params;
}

/** 422 `fields` -> mark the inputs (aria-invalid + title) so the user sees which filter is wrong. */
export function markFields(form, fields = {}) {
  for (const input of form.elements) {
    if (!input.name) continue;
    const msg = fields[input.name];
    input.toggleAttribute("aria-invalid", Boolean(msg));
    if (msg) input.title = msg;
    else input.removeAttribute("title");
  }
}
