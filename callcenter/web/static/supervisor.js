// Supervision page (docs/supervision.md): wallboard, call log + detail, statistics, abandoned calls
// (the list and its call-backs live in abandoned.js, shared with the call-taker console).
//
// Design choices:
// - Everything is built with DOM APIs (textContent, createElementNS): no innerHTML, so a caller's number
//   or a note typed by someone can never become markup, and the strict CSP needs no exceptions.
// - The wallboard is fed twice: WebSocket messages say "something changed" (we then re-read the whole
//   board, because one message does not carry enough to patch it), and a 5 s poll catches the changes
//   no message announces (a caller waiting longer, today's figures) and covers a dead socket.
// - The server owns every number; the page only formats. Shapes are read tolerantly (`a ?? b`) where
//   the contract leaves a field name open, so a small server-side rename degrades to "–", not a crash.

import { abandonedList, fmtDur, formParams, h, markFields, showError } from "./abandoned.js";
import { api, setAuthLostHandler, setCsrf } from "./api.js";
import { fieldMap } from "./fieldmap.js";
import { applyI18n, codeLabel, currentLang, fmtDate, setLang, t } from "./i18n.js";
import { qualitySection, sampleList, scoresCard } from "./quality.js";

const POLL_MS = 5000;
/** The map tab rereads the dashboard this often (officers report positions with their status updates). */
const MAP_POLL_MS = 15000;
const WS_MIN_BACKOFF_MS = 500;
const WS_MAX_BACKOFF_MS = 10000;
const WS_SILENCE_MS = 45000; // the server pings every 20 s: two missed pings = a dead link
const LOG_PAGE = 50;
/** sessionStorage key of the call open in the detail panel (per tab; a reload reopens it). */
const OPEN_DETAIL = "cc112.detail";
const VIEWS = ["wallboard", "log", "stats", "abandoned", "quality", "map"];
const CATEGORIES = ["medical", "fire", "disaster", "traffic_accident", "crime", "violence_women_children",
  "wild_animal", "mental_abandoned", "missing_person", "public_order", "environment", "infectious_disease", "other"];
const CLASSIFICATIONS = ["genuine", "non_emergency", "prank", "hoax", "silent", "misdial", "abandoned"];
const CALL_STATUSES = ["arrived", "queued", "ringing", "answered", "overflow", "completed", "abandoned", "ended"];

const state = {
  user: null,
  view: null,
  ws: null,
  wsBackoff: WS_MIN_BACKOFF_MS,
  wsWatchdog: null,
  pollTimer: null,
  refreshQueued: null,
  wallboard: null,
  wallboardAt: 0, // performance.now() of the last answer: wait times tick locally in between
  wbReasons: new Map(), // interface -> the pause reason picked on the wallboard (kept across re-renders)
  logOffset: 0,
  logData: null,
  detail: null,
  stats: null,
  abandoned: null, // the list of the "abandoned" tab (abandoned.js), made once the page is shown
  quality: null, // the sample list of the "quality" tab (quality.js)
  map: null, // the "map" tab's dashboard (fieldmap.js), made when first shown
};

// ---------------------------------------------------------------- small helpers

const $ = (id) => document.getElementById(id);

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) node.setAttribute(k, String(v));
  if (text != null) node.textContent = String(text);
  return node;
}

const locale = () => (currentLang() === "en" ? "en-GB" : "id-ID");
const fmtNum = (n, digits = 0) =>
  n == null || Number.isNaN(Number(n))
    ? "–"
    : new Intl.NumberFormat(locale(), { maximumFractionDigits: digits, minimumFractionDigits: digits }).format(n);

// Shares arrive as percents with one decimal (26.9), null when there is nothing to divide by.
const fmtPct = (p) => (p == null ? "–" : `${fmtNum(p, 1)}%`);

/** Data-testid-safe form of an Asterisk interface: `PJSIP/ct-01` -> `PJSIP-ct-01`. */
const safeId = (text) => String(text).replace(/[^A-Za-z0-9_-]/g, "-");

const isoDay = (d) => {
  const z = new Date(d.getTime() - d.getTimezoneOffset() * 60000); // local calendar day, not UTC's
  return z.toISOString().slice(0, 10);
};
const daysAgo = (n) => isoDay(new Date(Date.now() - n * 86400000));

function fillCodeSelects() {
  const lists = { cat: CATEGORIES, cls: [...CLASSIFICATIONS, "unclassified"], cstatus: CALL_STATUSES };
  for (const sel of document.querySelectorAll("select[data-codes]")) {
    const prefix = sel.dataset.codes;
    const keep = sel.value;
    sel.replaceChildren(h("option", { value: "" }, t("f.all")),
      ...lists[prefix].map((c) => h("option", { value: c }, codeLabel(c, prefix))));
    sel.value = keep;
  }
}

// ---------------------------------------------------------------- start, login state, language

async function start() {
  setLang(localStorage.getItem("cc112.lang") || "id");
  $("lang").value = currentLang();
  fillCodeSelects();
  setAuthLostHandler(() => showGate("loggedOut"));
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (err) {
    return showGate(err.status === 401 ? "loggedOut" : "error", err);
  }
  setCsrf(me.csrf_token);
  state.user = me.user;
  $("who").textContent = me.user.display_name || me.user.username;
  if (me.user.language) changeLanguage(me.user.language);
  if (me.user.role !== "supervisor") return showGate("role");
  $("loading").hidden = true;
  $("app").hidden = false;
  initForms();
  connectWs();
  showView(VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "wallboard");
  // A reload reopens the call that was open in this tab (a review half typed there comes back with it).
  const open = sessionStorage.getItem(OPEN_DETAIL);
  if (open && state.view === "log") openDetail(open, { restored: true });
}

function showGate(kind, err) {
  $("loading").hidden = true;
  $("app").hidden = true;
  $("gate").hidden = false;
  stopLive();
  $("conn").textContent = ""; // no live link is expected here: hide the badge rather than say "disconnected"
  $("gate-text").textContent =
    kind === "role" ? t("sup.notForRole") : kind === "loggedOut" ? t("sup.loggedOut") : err?.status === 0 ? t("error.network") : t("error.generic", { s: err?.status });
  $("gate-link").hidden = kind !== "loggedOut";
}

function changeLanguage(lang) {
  setLang(lang);
  $("lang").value = currentLang();
  localStorage.setItem("cc112.lang", currentLang());
  fillCodeSelects();
  setConn($("conn").dataset.state);
  // Re-draw what is on screen from the data we already have (no new request).
  if (state.wallboard) renderWallboard();
  if (state.logData) renderLog();
  if (state.detail) renderDetail();
  if (state.stats) renderStats();
  state.abandoned?.render();
  state.quality?.render();
}

// ---------------------------------------------------------------- tabs

function showView(view) {
  state.view = view;
  for (const v of VIEWS) {
    $(`view-${v}`).hidden = v !== view;
    $(`tab-${v}`).setAttribute("aria-selected", String(v === view));
  }
  // The hash makes a tab bookmarkable: the wall screen opens straight at /supervisor#wallboard.
  history.replaceState(null, "", `#${view}`);
  document.body.classList.toggle("is-wallboard", view === "wallboard");
  clearInterval(state.pollTimer);
  if (view === "wallboard") {
    refreshWallboard();
    state.pollTimer = setInterval(refreshWallboard, POLL_MS);
  } else if (view === "log" && !state.logData) loadLog();
  else if (view === "stats" && !state.stats) loadStats();
  else if (view === "abandoned") state.abandoned.load();
  else if (view === "quality") state.quality.load();
  else if (view === "map") {
    state.map ??= fieldMap($("sup-map"), $("sup-map-status"));
    state.map.load();
    state.pollTimer = setInterval(() => state.map.load(), MAP_POLL_MS);
  }
}

function initForms() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showView(tab.dataset.view));
  const setRange = (form, from, to) => {
    form.elements.from.value = from;
    form.elements.to.value = to;
  };
  setRange($("log-filters"), daysAgo(6), daysAgo(0));
  setRange($("stats-filters"), daysAgo(29), daysAgo(0));
  setRange($("ab-filters"), daysAgo(1), daysAgo(0));
  state.abandoned = abandonedList({ body: $("ab-body"), error: $("ab-error"), form: $("ab-filters") });
  // A sampled call opens in the call log's detail panel, where the review form sits under the recording.
  state.quality = sampleList({ form: $("q-filters"), body: $("q-body"), error: $("q-error"), onOpen: (id) => { showView("log"); openDetail(id); } });
  $("log-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.logOffset = 0;
    loadLog();
  });
  // A reset clears the date range too; the next search then asks the server for its default window.
  $("log-filters").addEventListener("reset", () => setTimeout(() => { state.logOffset = 0; loadLog(); }));
  $("log-prev").addEventListener("click", () => { state.logOffset = Math.max(0, state.logOffset - LOG_PAGE); loadLog(); });
  $("log-next").addEventListener("click", () => { state.logOffset += LOG_PAGE; loadLog(); });
  $("detail-close").addEventListener("click", closeDetail);
  $("stats-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadStats(); });
  $("ab-filters").addEventListener("submit", (ev) => { ev.preventDefault(); state.abandoned.load(); });
  // Wait times keep counting between two polls, so the wall never shows a frozen number.
  setInterval(tickWaits, 1000);
}

// ---------------------------------------------------------------- live link

function setConn(st, seconds) {
  const el = $("conn");
  el.dataset.state = st || "offline";
  el.textContent = st === "reconnecting" ? t("conn.reconnecting", { s: seconds }) : t(`conn.${st || "offline"}`);
}

function connectWs() {
  setConn("connecting");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/ws`);
  state.ws = ws;
  ws.onopen = () => {
    state.wsBackoff = WS_MIN_BACKOFF_MS;
    setConn("online");
    armWatchdog(ws);
    queueRefresh(); // anything may have changed while we were away
  };
  ws.onmessage = (ev) => {
    armWatchdog(ws);
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "ping" || msg.type === "hello") return;
    if (msg.type === "login_attack") return showLoginAttack(msg);
    if (msg.type === "callback") state.abandoned?.onCallbackMessage(msg);
    if (msg.type === "presence_alert") renderAlerts([msg.alert, ...(state.wallboard?.alerts || [])]);
    queueRefresh();
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    clearTimeout(state.wsWatchdog);
    const delay = state.wsBackoff;
    state.wsBackoff = Math.min(delay * 2, WS_MAX_BACKOFF_MS);
    setConn("reconnecting", Math.ceil(delay / 1000));
    state.reconnectTimer = setTimeout(async () => {
      // A refused handshake looks like a drop; on an expired session show the login link instead.
      try {
        await api("GET", "/api/me");
      } catch (err) {
        if (err.status === 401) return showGate("loggedOut");
      }
      connectWs();
    }, delay);
  };
}

// Failed logins piling up across the centre (the server's throttle reports it once per window): a
// banner until dismissed; nobody is locked out, but someone is guessing passwords.
function showLoginAttack(msg) {
  $("attack-text").textContent = t("sup.loginAttack", {
    n: msg.failures, s: Math.round(msg.seconds ?? 0), k: msg.clients, a: msg.top_client, m: msg.top_client_failures,
  });
  $("attack-banner").hidden = false;
  $("attack-dismiss").onclick = () => { $("attack-banner").hidden = true; };
}

function armWatchdog(ws) {
  clearTimeout(state.wsWatchdog);
  state.wsWatchdog = setTimeout(() => ws.close(), WS_SILENCE_MS);
}

function stopLive() {
  clearInterval(state.pollTimer);
  clearTimeout(state.reconnectTimer);
  clearTimeout(state.wsWatchdog);
  const ws = state.ws;
  state.ws = null;
  ws?.close();
  setConn("offline");
}

/** A burst of events (a call ringing at 8 desks) becomes one wallboard read, not 8. */
function queueRefresh() {
  if (state.view !== "wallboard" || state.refreshQueued) return;
  state.refreshQueued = setTimeout(() => {
    state.refreshQueued = null;
    refreshWallboard();
  }, 300);
}

// ---------------------------------------------------------------- wallboard

async function refreshWallboard() {
  if (state.wbInFlight) return; // a slow server must not pile up requests every 5 s
  state.wbInFlight = true;
  try {
    state.wallboard = await api("GET", "/api/wallboard");
    state.wallboardAt = performance.now();
    showError($("wb-error"), null);
    renderWallboard();
  } catch (err) {
    if (err.status !== 401) showError($("wb-error"), err);
    $("view-wallboard").classList.add("stale"); // dim the numbers: they are no longer live
  } finally {
    state.wbInFlight = false;
  }
}

function renderWallboard() {
  const wb = state.wallboard;
  $("view-wallboard").classList.remove("stale");
  const waiting = wb.waiting || [];
  $("wb-waiting").textContent = fmtNum(waiting.length);
  $("wb-waiting-tile").classList.toggle("alert", waiting.length > 0);
  $("wb-queue").replaceChildren(
    ...waiting
      .slice()
      // Reports not in the queue (position null) after the queue, longest waiting first.
      .sort((a, b) => (a.position ?? 1e9) - (b.position ?? 1e9) || (b.wait_seconds ?? 0) - (a.wait_seconds ?? 0))
      .map((w) =>
        h("li", { class: w.report_id != null ? "app-report" : null, dataset: { testid: "wb-waiting-caller", wait: w.wait_seconds ?? 0, reportId: w.report_id ?? "", queued: w.position != null ? "1" : "0" } },
          h("span", { class: "pos" }, w.position != null ? `${w.position}.` : "–"),
          w.report_id != null
            ? h("span", { class: "badge report-badge", dataset: { testid: "wb-report-badge" }, title: w.report ? t(`wb.report.${w.report.state}`) : "" },
                w.position != null ? t("wb.report") : `${t("wb.report")} · ${t(`wb.report.${w.report?.state || "not_queued"}`)}`)
            : null,
          h("span", { class: w.caller ? "caller mono" : "caller muted" }, w.caller || t("pop.withheld")),
          h("span", { class: "wait" }, fmtDur(w.wait_seconds)))),
  );
  $("wb-longest-wait").dataset.wait = wb.longest_wait ?? 0;
  $("wb-calls-today").textContent = fmtNum(wb.calls_today);
  $("wb-abandoned").textContent = fmtNum(wb.abandoned_today);
  $("wb-abandoned-tile").classList.toggle("warn", (wb.abandoned_today || 0) > 0);
  $("wb-sla").textContent = fmtNum(wb.sla_breaches_today);
  $("wb-sla-tile").classList.toggle("alert", (wb.sla_breaches_today || 0) > 0);
  // Targets from NENA-STA-020.1 / NFPA 1225: 90% within 10 s and 15 s, 95% within 20 s.
  const targets = { 10: 90, 15: 90, 20: 95 };
  for (const sec of ["10", "15", "20"]) {
    const pct = wb.answered_within?.[sec];
    const el = $(`wb-within-${sec}`);
    el.textContent = fmtPct(pct);
    el.classList.toggle("good", pct != null && pct >= targets[sec]);
    el.classList.toggle("bad", pct != null && pct < targets[sec]);
  }
  renderMembers(wb.members || []);
  renderAlerts(wb.alerts || []);
  renderCounts($("wb-open-category"), wb.open_incidents?.by_category, (c) => codeLabel(c, "cat"));
  renderCounts($("wb-open-agency"), wb.open_incidents?.by_agency, (c) => c.toUpperCase());
  $("wb-updated").textContent = t("wb.updated", { t: fmtDate(wb.now || new Date().toISOString(), false) });
  tickWaits();
}

/** Between two reads add the time elapsed locally; the server's figure wins at the next read. */
function tickWaits() {
  if (!state.wallboard || state.view !== "wallboard") return;
  const extra = (performance.now() - state.wallboardAt) / 1000;
  for (const li of $("wb-queue").children) li.lastChild.textContent = fmtDur(Number(li.dataset.wait) + extra);
  const waiting = state.wallboard.waiting || [];
  for (const el of $("wb-members").querySelectorAll("[data-secs]")) {
    if (el.dataset.secs === "") continue;
    el.textContent = `${el.textContent.startsWith("≥") ? "≥ " : ""}${fmtDur(Number(el.dataset.secs) + extra)}`;
  }
  const longestEl = $("wb-longest-wait");
  // longest_wait covers today's answered calls too when nobody waits; only a live wait keeps ticking.
  const longest = waiting.length ? Number(longestEl.dataset.wait) + extra : state.wallboard.longest_wait;
  longestEl.textContent = fmtDur(longest);
  $("wb-longest-tile").classList.toggle("alert", waiting.length > 0 && longest > 20);
  $("wb-longest-tile").classList.toggle("warn", waiting.length > 0 && longest > 10 && longest <= 20);
}

function memberStateKey(m) {
  if (m.paused) return "paused";
  if (m.in_call || ["in_use", "busy", "ring_in_use", "on_hold"].includes(m.state)) return "busy";
  if (m.state === "ringing") return "ringing";
  if (m.state === "not_in_use") return "ready";
  return "offline";
}

const PAUSE_REASONS = ["break", "wrap-up", "training", "meeting", "technical"];

/** Time in state: a member first seen after the app started shows "≥" (the state began before that). */
function memberTime(m, extra = 0) {
  if (m.seconds_in_state == null) return "";
  return `${m.since_known ? "" : "≥ "}${fmtDur(m.seconds_in_state + extra)}`;
}

/** Pause (with a reason), unpause and log out a call-taker, through Asterisk like their own buttons. */
async function controlMember(interfaceName, action, reason) {
  try {
    await api("POST", "/api/supervisor/presence", { interface: interfaceName, action, reason });
    showError($("wb-error"), null);
    queueRefresh(); // the state shown changes once Asterisk reports it
  } catch (err) {
    showError($("wb-error"), err);
  }
}

/** Listen / whisper / barge: the supervisor's own phone rings, then joins the call (ChanSpy). */
async function spyOn(interfaceName, mode) {
  try {
    await api("POST", "/api/supervisor/spy", { interface: interfaceName, mode });
    showError($("wb-error"), null);
    $("wb-spy").textContent = t("wb.spyRinging");
    $("wb-spy").hidden = false;
  } catch (err) {
    showError($("wb-error"), err);
  }
}

function spyControls(m) {
  const id = safeId(m.interface);
  return ["listen", "whisper", "barge"].map((mode) =>
    h("button", { type: "button", class: "btn btn-small", dataset: { testid: `wb-${mode}-${id}` }, onclick: () => spyOn(m.interface, mode) }, t(`wb.${mode}`)));
}

function memberControls(m) {
  const id = safeId(m.interface);
  const spy = memberStateKey(m) === "busy" ? spyControls(m) : [];
  if (m.paused) {
    return h("span", { class: "mctl" },
      h("button", { type: "button", class: "btn btn-small", dataset: { testid: `wb-unpause-${id}` }, onclick: () => controlMember(m.interface, "unpause") }, t("wb.unpause")),
      h("button", { type: "button", class: "btn btn-small btn-quiet", dataset: { testid: `wb-logout-${id}` }, onclick: () => controlMember(m.interface, "logout") }, t("wb.logout")));
  }
  const select = h("select", { dataset: { testid: `wb-reason-${id}` }, "aria-label": t("presence.reason"),
    onchange: (ev) => state.wbReasons.set(m.interface, ev.target.value) },
  ...PAUSE_REASONS.map((r) => h("option", { value: r }, codeLabel(r, "reason"))));
  select.value = state.wbReasons.get(m.interface) || PAUSE_REASONS[0];
  return h("span", { class: "mctl" }, ...spy, select,
    h("button", { type: "button", class: "btn btn-small", dataset: { testid: `wb-pause-${id}` }, onclick: () => controlMember(m.interface, "pause", select.value) }, t("wb.pause")),
    h("button", { type: "button", class: "btn btn-small btn-quiet", dataset: { testid: `wb-logout-${id}` }, onclick: () => controlMember(m.interface, "logout") }, t("wb.logout")));
}

function renderMembers(members) {
  // One person may be in several queues: show them once (the first report wins; they share a device).
  const byIface = new Map();
  for (const m of members) if (!byIface.has(m.interface)) byIface.set(m.interface, m);
  const order = { ringing: 0, busy: 1, ready: 2, paused: 3, offline: 4 };
  const list = [...byIface.values()].sort(
    (a, b) => order[memberStateKey(a)] - order[memberStateKey(b)] || String(a.display_name || a.name).localeCompare(b.display_name || b.name),
  );
  $("wb-members").replaceChildren(
    ...list.map((m) => {
      const key = memberStateKey(m);
      const stateText = m.paused
        ? t("wb.pausedWhy", { r: m.reason ? codeLabel(m.reason, "reason") : "–" })
        : codeLabel(m.state || "unknown", "state");
      return h("li", { class: `member m-${key}`, dataset: { testid: `wb-member-${safeId(m.interface)}`, state: key, reason: m.paused ? m.reason || "" : "" } },
        h("span", { class: "dot", "aria-hidden": "true" }),
        h("span", { class: "mname" }, m.display_name || m.name || m.interface),
        h("span", { class: "mstate" }, stateText),
        h("span", { class: "mtime", dataset: { testid: "wb-member-time", secs: m.seconds_in_state ?? "" } }, memberTime(m)),
        memberControls(m));
    }),
  );
  if (!list.length) $("wb-members").append(h("li", { class: "muted" }, t("wb.noMembers")));
}

/** Auto-pauses of the last hour: a call-taker let offered calls ring out and was paused "tidak menjawab". */
function renderAlerts(alerts = []) {
  const box = $("wb-alerts");
  box.hidden = !alerts.length;
  box.replaceChildren(...alerts.map((a) =>
    h("p", { dataset: { testid: "wb-alert", interface: a.interface } },
      t(a.paused ? "wb.autoPaused" : "wb.autoPauseFailed", { m: a.member || a.interface, n: a.missed }),
      h("span", { class: "muted" }, ` · ${fmtDate(a.at, false)}`))));
}

function renderCounts(ul, counts = {}, label) {
  const rows = Object.entries(counts || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  ul.replaceChildren(...rows.map(([code, n]) =>
    h("li", { dataset: { testid: `wb-open-${safeId(code)}` } }, h("span", {}, label(code)), h("b", {}, fmtNum(n)))));
  if (!rows.length) ul.append(h("li", { class: "muted" }, t("wb.none")));
}

// ---------------------------------------------------------------- call log

async function loadLog() {
  const form = $("log-filters");
  const params = formParams(form);
  $("log-csv").href = `/api/stats/calls.csv?${params}`;
  params.set("limit", LOG_PAGE);
  params.set("offset", state.logOffset);
  try {
    state.logData = await api("GET", `/api/calls/log?${params}`);
    markFields(form);
    showError($("log-error"), null);
    renderLog();
  } catch (err) {
    markFields(form, err.body?.fields);
    showError($("log-error"), err);
  }
}

const callId = (c) => c.id ?? c.call_id;

function renderLog() {
  const { calls = [], total = 0 } = state.logData;
  const body = $("log-body");
  body.replaceChildren(
    ...calls.map((c) => {
      const row = h("tr", {
        class: "clickable", tabindex: "0",
        dataset: { testid: "log-row", callId: callId(c) },
        "aria-selected": String(state.detail && callId(state.detail.call) === callId(c)),
        onclick: () => openDetail(callId(c)),
        onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); openDetail(callId(c)); } },
      },
      h("td", {}, fmtDate(c.arrived_at)),
      h("td", { class: "mono" }, c.caller_number || c.caller_raw || t("pop.withheld")),
      h("td", {}, c.calltaker || c.answered_by || "–"),
      h("td", { class: "num" }, fmtDur(c.wait_seconds)),
      h("td", { class: "num" }, fmtDur(c.talk_seconds)),
      h("td", {}, h("span", { class: `st-badge st-${c.status}` }, codeLabel(c.status, "cstatus"))),
      h("td", {}, c.classification ? codeLabel(c.classification, "cls") : "–"),
      // A call may have led to several incidents (rare): show them all.
      h("td", {}, (c.incidents || []).map((i) => codeLabel(i.category, "cat")).join(", ") || "–"),
      h("td", { class: "mono" }, (c.incidents || []).map((i) => i.reference).join(" ") || "–"));
      return row;
    }),
  );
  if (!calls.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, t("log.empty"))));
  const first = total ? state.logOffset + 1 : 0;
  $("log-range").textContent = t("log.range", { a: fmtNum(first), b: fmtNum(state.logOffset + calls.length), n: fmtNum(total) });
  $("log-prev").disabled = state.logOffset <= 0;
  $("log-next").disabled = state.logOffset + calls.length >= total;
}

async function openDetail(id, { restored = false } = {}) {
  sessionStorage.setItem(OPEN_DETAIL, id);
  $("detail-panel").hidden = false;
  $("detail-title").textContent = t("detail.loading");
  $("detail-body").replaceChildren();
  try {
    state.detail = await api("GET", `/api/calls/${encodeURIComponent(id)}/detail`);
    state.detail.call.id ??= id;
    renderDetail();
    if (state.logData) renderLog(); // moves the selection mark
  } catch (err) {
    if (restored && err.status === 404) return closeDetail(); // gone since (retention): nothing to reopen
    state.detail = null;
    $("detail-title").textContent = err.status === 0 ? t("error.network") : t("error.generic", { s: err.status });
  }
}

function closeDetail() {
  sessionStorage.removeItem(OPEN_DETAIL);
  state.detail = null;
  $("detail-panel").hidden = true;
  $("detail-body").replaceChildren(); // also stops the audio
  if (state.logData) renderLog();
}

function dl(pairs) {
  return h("dl", { class: "kv" }, pairs.filter(([, v]) => v != null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function section(title, ...content) {
  return h("section", { class: "dsec" }, h("h3", {}, title), ...content);
}

/** `{a: 1, b: "x"}` of an event or audit row as a short readable line. */
const kvText = (obj) =>
  Object.entries(obj || {}).map(([k, v]) => `${k}: ${Array.isArray(v) ? `${v[0] ?? "∅"} → ${v[1] ?? "∅"}` : typeof v === "object" && v ? JSON.stringify(v) : v}`).join(" · ");

function renderDetail() {
  const d = state.detail;
  const c = d.call || {};
  const id = callId(c);
  $("detail-title").textContent = `${t("detail.call")} ${c.caller_number || c.caller_raw || t("pop.withheld")}`;
  const parts = [];
  parts.push(dl([
    [t("log.arrived"), fmtDate(c.arrived_at)],
    [t("detail.answered"), c.answered_at ? fmtDate(c.answered_at) : "–"],
    [t("log.calltaker"), c.calltaker || c.answered_by],
    [t("log.wait"), fmtDur(c.wait_seconds)],
    [t("log.talk"), fmtDur(c.talk_seconds)],
    [t("log.status"), codeLabel(c.status, "cstatus")],
    [t("log.classification"), c.classification ? codeLabel(c.classification, "cls") : "–"],
    [t("detail.callId"), id],
  ]));
  // preload="none": every fetch of the recording is written to access_log, so only a deliberate play
  // (not merely opening the detail) should count as listening to it.
  const audioWrap = h("div", { class: "audio" });
  if (d.recording_url === null) audioWrap.append(h("p", { class: "muted", dataset: { testid: "detail-no-recording" } }, t("detail.noRecording")));
  else {
    const audio = h("audio", { controls: true, preload: "none", src: `/api/calls/${encodeURIComponent(id)}/recording`, dataset: { testid: "detail-audio" } });
    audio.addEventListener("error", () => audioWrap.append(h("p", { class: "muted" }, t("detail.noRecording"))), { once: true });
    audioWrap.append(audio, h("p", { class: "muted small" }, t("detail.audioLogged")));
  }
  parts.push(section(t("detail.recording"), audioWrap));
  // The review form right under the player: the reviewer listens and scores side by side.
  parts.push(qualitySection(c, { username: state.user.username }));

  const timeline = d.timeline || [];
  parts.push(section(t("detail.timeline"), timeline.length
    ? h("ol", { class: "d-timeline", dataset: { testid: "detail-timeline" } }, timeline.map((e) =>
      h("li", {}, h("time", {}, fmtDate(e.at, false)), h("b", {}, e.kind || e.type || ""), h("span", { class: "muted" }, kvText(e.data ?? e.detail)))))
    : h("p", { class: "muted" }, t("wb.none"))));

  const inc = d.incident;
  if (inc) {
    parts.push(section(`${t("detail.incident")} ${inc.reference || ""}`, dl([
      [t("intake.category"), codeLabel(inc.category, "cat")],
      [t("intake.priority"), inc.priority ? codeLabel(inc.priority, "prio") : null],
      [t("intake.reporter_name"), inc.reporter_name],
      [t("intake.callback_number"), inc.callback_number],
      [t("intake.address"), [inc.address, inc.subdistrict, inc.district].filter(Boolean).join(", ")],
      [t("intake.landmark"), inc.landmark],
      [t("intake.victims_count"), inc.victims_count],
      [t("intake.victims_condition"), inc.victims_condition],
      [t("intake.access_route"), inc.access_route],
      [t("intake.notes"), inc.notes],
      [t("detail.status"), inc.status],
      [t("detail.created"), fmtDate(inc.created_at)],
    ])));
    const audit = d.incident_audit || [];
    parts.push(section(t("detail.history"), audit.length
      ? h("ol", { class: "d-timeline", dataset: { testid: "detail-audit" } }, audit.map((a) =>
        h("li", {}, h("time", {}, fmtDate(a.at)), h("b", {}, `${a.user ?? ""} ${a.action ?? ""}`), h("span", { class: "muted" }, kvText(a.changes)))))
      : h("p", { class: "muted" }, t("wb.none"))));
  } else parts.push(h("p", { class: "muted" }, t("detail.noIncident")));

  const dispatches = d.dispatches || [];
  if (inc) parts.push(section(t("dispatch.title"), dispatches.length ? dispatches.map(renderDispatch) : h("p", { class: "muted" }, t("dispatch.noDispatches"))));

  const r = d.rating;
  parts.push(section(t("detail.rating"), r
    ? h("p", { dataset: { testid: "detail-rating" } },
      r.score != null ? h("span", { class: "stars", "aria-label": `${r.score}/5` }, "★".repeat(r.score) + "☆".repeat(5 - r.score), ` ${r.score}/5`) : t("detail.ratingPending", { s: r.status || "" }),
      r.via ? h("span", { class: "muted" }, ` · ${r.via.toUpperCase()}`) : null,
      r.rated_at ? h("span", { class: "muted" }, ` · ${fmtDate(r.rated_at)}`) : null)
    : h("p", { class: "muted" }, t("detail.noRating"))));
  $("detail-body").replaceChildren(...parts);
}

function renderDispatch(x) {
  return h("div", { class: "d-dispatch", dataset: { testid: `detail-dispatch-${x.id}` } },
    h("p", {}, h("b", {}, x.agency_name || String(x.agency).toUpperCase()), " — ", codeLabel(x.status, "dstatus"),
      x.accepted_at ? h("span", { class: "muted" }, ` · ${fmtDate(x.accepted_at, false)} ${t("dispatch.acceptedBy", { l: x.accepted_via || x.accepted_line || "" })}`) : null),
    (x.attempts || []).length
      ? h("table", { class: "mini" }, h("caption", {}, t("dispatch.attempts")),
        (x.attempts || []).map((a) => h("tr", {}, h("td", {}, fmtDate(a.started_at, false)), h("td", { class: "mono" }, a.line), h("td", {}, a.via || ""), h("td", {}, codeLabel(a.outcome || "pending", "outcome")))))
      : null,
    (x.updates || []).length
      ? h("table", { class: "mini" }, h("caption", {}, t("dispatch.updates")),
        (x.updates || []).map((u) => h("tr", {}, h("td", {}, fmtDate(u.at, false)), h("td", {}, codeLabel(u.status, "dstatus")), h("td", {}, u.note || ""),
          h("td", {}, u.photo_url ? h("a", { href: u.photo_url, target: "_blank", rel: "noopener" }, t("dispatch.photo")) : ""))))
      : null);
}

// ---------------------------------------------------------------- statistics

async function loadStats() {
  const params = formParams($("stats-filters"));
  state.statsQuery = params.toString();
  try {
    state.stats = await api("GET", `/api/stats?${params}`);
    markFields($("stats-filters"));
    showError($("stats-error"), null);
    renderStats();
  } catch (err) {
    markFields($("stats-filters"), err.body?.fields);
    showError($("stats-error"), err);
  }
}

/** Horizontal bars: one row per item, label left, "127 (26.9%)" right; for named categories. */
function barChart(items, name) {
  // Label column sized to the longest label (~8.6 px a character at 14 px, capitals included), capped: longer names are
  // cut with "…" and stay readable in full in the tooltip and the table below.
  const maxChars = 30;
  const longest = Math.min(maxChars, Math.max(4, ...items.map((i) => i.label.length)));
  // A fixed total width keeps the same text size in every chart (the SVG scales as a whole).
  const W = 600, rowH = 28, valueW = 110;
  const labelW = Math.min(270, Math.max(90, Math.round(longest * 8.6) + 12));
  const barW = W - labelW - valueW;
  const max = Math.max(1, ...items.map((i) => i.value));
  const cut = (x) => (x.length > maxChars ? `${x.slice(0, maxChars - 1)}…` : x);
  const svg = s("svg", { class: "chart bars", viewBox: `0 0 ${W} ${Math.max(1, items.length) * rowH}`, role: "img", "aria-label": t(`st.${name}`), "data-testid": `stats-chart-${name}` });
  items.forEach((it, i) => {
    const y = i * rowH;
    const w = (it.value / max) * barW;
    const g = s("g", { "data-code": it.code });
    g.append(s("text", { x: labelW - 8, y: y + rowH * 0.68, "text-anchor": "end", class: "lbl" }, cut(it.label)),
      s("rect", { x: labelW, y: y + 4, width: Math.max(w, it.value ? 2 : 0), height: rowH - 8, rx: 2, class: `bar ${it.cls || ""}` }),
      s("text", { x: labelW + w + 6, y: y + rowH * 0.68, class: "val" }, it.text));
    g.append(s("title", {}, `${it.label}: ${it.text}`));
    svg.append(g);
  });
  return svg;
}

/** Vertical columns with an x label per column (hours, days, answer-time buckets). */
function columnChart(items, name) {
  const W = 660, H = 200, top = 18, bottom = 34, left = 6;
  const colW = (W - left) / Math.max(1, items.length);
  const max = Math.max(1, ...items.map((i) => i.value));
  const every = Math.ceil(items.length / 24); // keep the x labels from overlapping on long ranges
  const svg = s("svg", { class: "chart cols", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": t(`st.${name}`), "data-testid": `stats-chart-${name}` });
  svg.append(s("line", { x1: left, x2: W, y1: H - bottom, y2: H - bottom, class: "axis" }));
  items.forEach((it, i) => {
    const hgt = (it.value / max) * (H - top - bottom);
    const x = left + i * colW;
    const g = s("g", {});
    g.append(s("rect", { x: x + colW * 0.12, y: H - bottom - hgt, width: colW * 0.76, height: hgt, class: "bar" }), s("title", {}, `${it.label}: ${fmtNum(it.value)}`));
    if (it.value && colW >= 18) g.append(s("text", { x: x + colW / 2, y: H - bottom - hgt - 4, "text-anchor": "middle", class: "val small" }, fmtNum(it.value)));
    if (i % every === 0) g.append(s("text", { x: x + colW / 2, y: H - bottom + 15, "text-anchor": "middle", class: "lbl small" }, it.label));
    svg.append(g);
  });
  return svg;
}

function table(name, head, rows) {
  return h("table", { class: "stats-table", dataset: { testid: `stats-${name}-table` } },
    h("thead", {}, h("tr", {}, head.map((x, i) => h("th", { class: i ? "num" : null }, x)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((x, i) => h("td", { class: i ? "num" : null }, x))))));
}

function card(name, csvTable, ...content) {
  const csv = csvTable
    ? h("a", { class: "csv", href: `/api/stats/${csvTable}.csv?${state.statsQuery}`, download: `${csvTable}.csv`, dataset: { testid: `stats-csv-${csvTable}` } }, "CSV")
    : null;
  return h("section", { class: "panel stats-card", dataset: { testid: `stats-${name}` } },
    h("div", { class: "card-head" }, h("h2", {}, t(`st.${name}`)), csv), ...content);
}

/** `[{code, count, share}]` -> chart items with the share shown like "127 (26.9%)". */
function shareItems(list, label) {
  return list.map((x) => ({ code: x.code, label: label(x), value: x.count || 0, pct: x.share, text: `${fmtNum(x.count)} (${fmtPct(x.share)})`, raw: x }));
}

function renderStats() {
  const st = state.stats;
  const cards = [];
  const agencyLabel = (x) => x.name || String(x.code).toUpperCase();

  const cat = shareItems(st.by_category || [], (x) => codeLabel(x.code, "cat"));
  cards.push(card("category", "by_category", barChart(cat, "category"),
    table("category", [t("st.col.category"), t("st.col.count"), t("st.col.share")], cat.map((x) => [x.label, fmtNum(x.value), fmtPct(x.pct)]))));

  const ag = shareItems(st.by_agency || [], agencyLabel);
  cards.push(card("agency", "by_agency", barChart(ag, "agency"),
    table("agency", [t("st.col.agency"), t("st.col.count"), t("st.col.share"), t("st.col.accepted")],
      ag.map((x) => [x.label, fmtNum(x.value), fmtPct(x.pct), fmtNum(x.raw.accepted)]))));

  // Shares by code, with the counts alongside (classification_counts) when the server sends them.
  const counts = st.classification_counts || {};
  const cls = Object.entries(st.classification_share || {}).map(([code, pct]) => ({
    code, label: codeLabel(code, "cls"), value: pct || 0, pct, count: counts[code],
    cls: ["prank", "hoax", "silent"].includes(code) ? "bar-bad" : "",
    text: counts[code] != null ? `${fmtNum(counts[code])} (${fmtPct(pct)})` : fmtPct(pct),
  }));
  const nuisance = cls.filter((x) => ["prank", "hoax", "silent"].includes(x.code)).reduce((a, x) => a + x.pct, 0);
  const clsHasCounts = cls.some((x) => x.count != null);
  cards.push(card("classification", "classification",
    h("p", { class: "big-figure", dataset: { testid: "stats-nuisance-share" } }, fmtPct(nuisance), h("span", { class: "muted" }, ` ${t("st.nuisance")}`)),
    barChart(cls, "classification"),
    clsHasCounts
      ? table("classification", [t("st.col.classification"), t("st.col.count"), t("st.col.share")], cls.map((x) => [x.label, fmtNum(x.count), fmtPct(x.pct)]))
      : table("classification", [t("st.col.classification"), t("st.col.share")], cls.map((x) => [x.label, fmtPct(x.pct)]))));

  const hours = (st.by_hour || []).map((v, i) => ({ label: String(i).padStart(2, "0"), value: typeof v === "object" ? v.count : v }));
  cards.push(card("hour", "by_hour", columnChart(hours, "hour"),
    h("details", {}, h("summary", {}, t("st.showTable")), table("hour", [t("st.col.hour"), t("st.col.count")], hours.map((x) => [`${x.label}:00`, fmtNum(x.value)])))));

  const days = (st.by_day || []).map((v) => ({ label: String(v.day ?? v.date ?? "").slice(5), full: v.day ?? v.date, value: v.count ?? 0, raw: v }));
  cards.push(card("day", "by_day", columnChart(days, "day"),
    h("details", {}, h("summary", {}, t("st.showTable")), table("day", [t("st.col.day"), t("st.col.count"), t("st.col.answered"), t("st.col.abandoned")],
      days.map((x) => [x.full, fmtNum(x.value), fmtNum(x.raw.answered), fmtNum(x.raw.abandoned)])))));

  const at = st.answer_time || {};
  // The last bucket has no upper bound (le_seconds null): label it "> previous bound".
  const buckets = (at.buckets || []).map((b, i, all) => ({
    label: b.le_seconds == null ? `>${all[i - 1]?.le_seconds ?? 0}` : `≤${b.le_seconds}`, value: b.count || 0 }));
  cards.push(card("answer-time", "answer_time",
    h("div", { class: "within-row" }, ["10", "15", "20"].map((k) =>
      h("div", { dataset: { testid: `stats-within-${k}` } }, h("span", { class: "muted" }, `≤ ${k} ${t("wb.sec")}`), h("b", {}, fmtPct(at.within?.[k]))))),
    columnChart(buckets, "answer-time"),
    table("answer-time", [t("st.col.bucket"), t("st.col.count")], buckets.map((x) => [`${x.label} ${t("wb.sec")}`, fmtNum(x.value)]))));

  const ack = st.dispatch_ack || {};
  cards.push(card("ack", null, h("div", { class: "within-row", dataset: { testid: "stats-dispatch-ack" } },
    h("div", {}, h("span", { class: "muted" }, t("st.median")), h("b", {}, fmtDur(ack.p50))),
    h("div", {}, h("span", { class: "muted" }, "P90"), h("b", {}, fmtDur(ack.p90))),
    h("div", {}, h("span", { class: "muted" }, t("st.col.count")), h("b", {}, fmtNum(ack.count)))),
  h("p", { class: "muted small" }, t("st.ackHint"))));

  const ratingRows = (list, nameOf) => (list || []).map((r) => [nameOf(r), fmtNum(r.count), r.average != null ? `${fmtNum(r.average, 2)} / 5` : "–"]);
  cards.push(card("ratings-calltaker", "ratings_calltaker",
    table("ratings-calltaker", [t("st.col.calltaker"), t("st.col.ratings"), t("st.col.average")], ratingRows(st.ratings?.by_calltaker, (r) => r.display_name || r.calltaker || "–"))));
  cards.push(card("ratings-agency", "ratings_agency",
    table("ratings-agency", [t("st.col.agency"), t("st.col.ratings"), t("st.col.average")], ratingRows(st.ratings?.by_agency, (r) => String(r.agency ?? "–").toUpperCase()))));

  $("stats-grid").replaceChildren(...cards);
  scoresCard(state.statsQuery).then((el) => $("stats-grid").append(el), (err) => showError($("stats-error"), err));
  // Offer the agency codes seen here as suggestions in the log's agency filter.
  $("agency-codes").replaceChildren(...(st.by_agency || []).map((x) => h("option", { value: x.code }, agencyLabel(x))));
}

// ---------------------------------------------------------------- go

$("lang").addEventListener("change", (ev) => {
  changeLanguage(ev.target.value);
  if (state.user) api("PATCH", "/api/me", { language: currentLang() }).catch(() => {}); // a preference, best effort
});
applyI18n(document);
start();
