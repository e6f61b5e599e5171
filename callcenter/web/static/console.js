// The 112 call-taker console: login, queue presence, the call pop, the incident intake, call
// classification and (for supervisors) the prank log. Contract: docs/console-api.md.
//
// Principles, because this runs all shift long on a closed network:
// - the server is the truth: presence and call state are shown as the server reports them;
// - nothing typed is ever lost: the intake is saved locally on every keystroke and to the server
//   shortly after; a reload, a crash, a dropped network or an expired session all come back to it;
// - the live link heals itself: the WebSocket reconnects with backoff and re-reads the current state.

import { api, ApiError, setAuthLostHandler, setCsrf } from "./api.js";
import { codeLabel, currentLang, fmtDate, setLang, t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

/** Builds an element; children are nodes or strings (always text, never parsed as HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("data-")) el.setAttribute(k, v);
    else el[k] = v;
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

const FIELDS = [
  "reporter_name", "callback_number", "address", "district", "subdistrict", "landmark", "latitude",
  "longitude", "category", "victims_count", "victims_condition", "access_route", "notes", "priority",
];
const LOCATION_FIELDS = ["address", "district", "subdistrict", "landmark", "latitude", "longitude"];
const FLAGGING = new Set(["prank", "hoax", "silent"]); // shown in red, and confirmed before sending
const CONFIRM_CLASSIFICATIONS = new Set(["prank", "hoax"]);
const DEFAULT_PRIORITY = "normal";
const DRAFT_DEBOUNCE_MS = 800;
const WS_MIN_BACKOFF_MS = 500;
const WS_MAX_BACKOFF_MS = 10_000;
const WS_SILENCE_MS = 50_000; // the server pings every 20 s; this much silence means a dead link

const state = {
  user: null,
  schema: null,
  call: null, // the Pop on screen
  callEnded: false,
  member: undefined, // undefined = not known yet, null = not in the queue
  form: { key: "none", callId: null, label: "" }, // which call the intake belongs to
  formDirty: false, // the intake holds something the call-taker typed or restored
  draftTimer: null,
  draftInFlight: Promise.resolve(),
  pendingPop: null, // a new call waiting while the form still holds another call's report
  classified: null, // the classification the server confirmed for the call on screen
  lastReference: null, // reference of the incident just created
  ws: null,
  wsBackoff: WS_MIN_BACKOFF_MS,
  wsStopped: true,
  wsWatchdog: null,
  reconnectTimer: null,
};

const isCalltaker = () => state.user?.role === "calltaker";
const isSupervisor = () => state.user?.role === "supervisor";

function errorText(err) {
  if (err instanceof ApiError && err.status === 0) return t("error.network");
  // The server's message is Indonesian; it is still better than a bare status code.
  return err?.body?.message || err?.body?.error || t("error.generic", { s: err?.status ?? "?" });
}

// ---------------------------------------------------------------- views, login, language

function show(view) {
  $("loading").hidden = true;
  $("login-view").hidden = view !== "login";
  $("denied-view").hidden = view !== "denied";
  $("console-view").hidden = view !== "console";
  $("logout").hidden = view === "login";
}

function applyUser(user) {
  state.user = user;
  $("who").textContent = user ? `${user.display_name || user.username} · ${user.role}` : "";
  if (user?.language) changeLanguage(user.language, { save: false });
}

function changeLanguage(lang, { save }) {
  setLang(lang);
  $("lang").value = currentLang();
  localStorage.setItem("cc112.lang", currentLang()); // for the login page of the next visit
  fillSchemaLists();
  renderAll();
  if (save && state.user) {
    api("PATCH", "/api/me", { language: currentLang() })
      .then((res) => res?.user && (state.user = res.user))
      .catch(() => {}); // the switch already applied locally; the profile catches up next time
  }
}

async function boot() {
  changeLanguage(localStorage.getItem("cc112.lang") || "id", { save: false });
  setAuthLostHandler(onAuthLost);
  try {
    const me = await api("GET", "/api/me");
    await startSession(me.user, me.csrf_token);
  } catch (err) {
    if (err.status === 401) showLogin();
    else {
      show("login");
      showLoginError(errorText(err));
    }
  }
}

function showLogin(message = "") {
  show("login");
  showLoginError(message);
  $("login-username").focus();
}

function showLoginError(message) {
  $("login-error").textContent = message;
  $("login-error").hidden = !message;
}

async function onLoginSubmit(ev) {
  ev.preventDefault();
  const button = ev.submitter || $("login-form").querySelector("button");
  button.disabled = true;
  try {
    const res = await api("POST", "/api/login", {
      username: $("login-username").value.trim(),
      password: $("login-password").value,
    });
    $("login-password").value = "";
    await startSession(res.user, res.csrf_token);
  } catch (err) {
    if (err.status === 401) showLoginError(t("login.failed"));
    else if (err.status === 429) showLoginError(t("login.throttled", { s: err.body.retry_after ?? "?" }));
    else showLoginError(errorText(err));
  } finally {
    button.disabled = false;
  }
}

async function startSession(user, csrf) {
  setCsrf(csrf);
  applyUser(user);
  if (!["calltaker", "supervisor"].includes(user.role)) {
    show("denied");
    return;
  }
  show("console");
  $("presence-panel").hidden = !isCalltaker();
  $("prank-panel").hidden = !isSupervisor();
  await loadSchema();
  // Bind the form before the WebSocket: restoreCurrent() then only needs to switch if a call is up.
  await bindForm(null, null);
  state.wsStopped = false;
  connectWs();
  if (isSupervisor()) loadPranks();
}

function onAuthLost() {
  if (!state.user) return;
  stopWs();
  // Keep the form and the local draft: after logging in again the same user gets it back.
  saveLocalDraft();
  state.user = null;
  showLogin(t("login.expired"));
}

async function onLogout() {
  // Make sure the server holds the report in progress before the session goes away.
  let serverHasDraft = !state.formDirty;
  if (state.formDirty && isCalltaker()) serverHasDraft = await flushServerDraft();
  const key = state.form.key;
  try {
    await api("POST", "/api/logout");
  } catch {
    /* the session is gone either way */
  }
  // Drafts hold personal (sometimes health) data: once the server has a copy, don't leave it on a
  // shared workstation. If that copy failed, the local one stays: losing the report is worse.
  if (serverHasDraft) removeLocalDraft(key);
  stopWs();
  state.user = null;
  state.call = null;
  state.callEnded = false;
  state.member = undefined;
  state.pendingPop = null;
  writeForm({});
  state.formDirty = false;
  state.form = { key: "none", callId: null, label: "" };
  renderAll();
  showLogin();
}

// ---------------------------------------------------------------- schema (code lists)

const FALLBACK_SCHEMA = {
  categories: ["medical", "fire", "disaster", "traffic_accident", "crime", "violence_women_children",
    "wild_animal", "mental_abandoned", "missing_person", "public_order", "environment",
    "infectious_disease", "other"].map((code) => ({ code })),
  priorities: ["critical", "high", "normal", "low"].map((code) => ({ code })),
  victim_conditions: [],
  districts: [],
};

async function loadSchema() {
  try {
    state.schema = await api("GET", "/api/intake/schema");
  } catch {
    state.schema = FALLBACK_SCHEMA; // the form stays usable; the server validates anyway
  }
  fillSchemaLists();
}

/** Labels for a code item: the server's labels when it sent them, else the local table. */
function itemLabel(item, prefix) {
  return item.label_id ? codeLabel(item) : codeLabel(item.code, prefix);
}

function fillSelect(select, items, prefix, { empty }) {
  const value = select.value;
  select.replaceChildren();
  if (empty) select.append(h("option", { value: "" }, t("intake.choose")));
  for (const item of items) select.append(h("option", { value: item.code }, itemLabel(item, prefix)));
  // Keep what was chosen, even a code this schema doesn't know (a draft from an older list).
  if (value && ![...select.options].some((o) => o.value === value)) select.append(h("option", { value }, value));
  select.value = value;
}

function fillSchemaLists() {
  const schema = state.schema;
  if (!schema) return;
  fillSelect($("f-category"), schema.categories || [], "cat", { empty: true });
  fillSelect($("f-priority"), schema.priorities || [], "prio", { empty: false });
  if (!$("f-priority").value) $("f-priority").value = DEFAULT_PRIORITY;
  // Victims' condition is free text (several victims differ); the list only suggests.
  $("victim-conditions").replaceChildren(
    ...(schema.victim_conditions || []).map((c) => h("option", { value: itemLabel(c, "cond") })),
  );
  $("districts").replaceChildren(...(schema.districts || []).map((d) => h("option", { value: d.name })));
  fillSubdistricts();
}

function fillSubdistricts() {
  const district = (state.schema?.districts || []).find((d) => d.name === $("f-district").value);
  const names = district ? district.subdistricts : (state.schema?.districts || []).flatMap((d) => d.subdistricts);
  $("subdistricts").replaceChildren(...names.map((n) => h("option", { value: n })));
}

// ---------------------------------------------------------------- intake form and drafts
//
// Why drafts go to two places: localStorage is synchronous and survives a reload, a browser crash
// and a dead network, so it is written on every input; the server copy survives a broken or swapped
// workstation and follows the call-taker to another desk, so it is written too, but debounced to
// spare the server a request per keystroke. On load the newer of the two wins.

const draftKey = (key) => `cc112.draft.${state.user?.username}.${key}`;

function readForm() {
  const data = {};
  for (const name of FIELDS) data[name] = $(`f-${name}`).value;
  return data;
}

function writeForm(data) {
  for (const name of FIELDS) {
    const el = $(`f-${name}`);
    const value = data[name] ?? (name === "priority" ? DEFAULT_PRIORITY : "");
    if (el.tagName === "SELECT" && value && ![...el.options].some((o) => o.value === value)) {
      el.append(h("option", { value }, String(value)));
    }
    el.value = value;
  }
  fillSubdistricts();
}

const formBlank = () => FIELDS.every((n) => n === "priority" || !String($(`f-${n}`).value).trim());

function readLocalDraft(key) {
  try {
    const entry = JSON.parse(localStorage.getItem(draftKey(key)) || "null");
    return entry && typeof entry.data === "object" ? entry : null;
  } catch {
    return null;
  }
}

function saveLocalDraft() {
  if (!state.user) return;
  const entry = { data: readForm(), updated_at: new Date().toISOString(), label: state.form.label };
  try {
    localStorage.setItem(draftKey(state.form.key), JSON.stringify(entry));
  } catch {
    /* storage full or disabled: the server copy still goes out */
  }
}

function removeLocalDraft(key) {
  localStorage.removeItem(draftKey(key));
}

function setDraftStatus(text) {
  $("draft-status").textContent = text;
}

function onFormInput(ev) {
  state.formDirty = true;
  if (ev.target.name) clearFieldError(ev.target.name);
  if (ev.target.name === "district") fillSubdistricts();
  $("intake-result").hidden = true;
  saveLocalDraft();
  setDraftStatus(t("draft.local"));
  if (isCalltaker()) {
    clearTimeout(state.draftTimer);
    state.draftTimer = setTimeout(() => flushServerDraft(), DRAFT_DEBOUNCE_MS);
  }
  renderOtherDrafts();
}

/** PUT the current form as the server draft; resolves to true when the server has it. */
function flushServerDraft({ keepalive = false } = {}) {
  clearTimeout(state.draftTimer);
  state.draftTimer = null;
  if (!isCalltaker()) return Promise.resolve(false);
  const key = state.form.key;
  const data = readForm();
  // Chain on the previous save so two PUTs for the same key never arrive out of order.
  const run = state.draftInFlight.then(() =>
    api("PUT", `/api/drafts/${encodeURIComponent(key)}`, { data }, { keepalive }).then(
      (res) => {
        if (state.form.key === key) setDraftStatus(t("draft.server", { t: fmtDate(res?.updated_at || new Date(), false) }));
        return true;
      },
      () => {
        if (state.form.key === key) setDraftStatus(t("draft.serverFailed"));
        return false;
      },
    ),
  );
  state.draftInFlight = run;
  return run;
}

/**
 * Attach the intake to a call (or to no call) and restore its draft: the server's or the local
 * one, whichever is newer. Prefills the callback number from the caller's number.
 */
async function bindForm(callId, pop) {
  const key = callId == null ? "none" : String(callId); // call ids may be numbers; storage keys are strings
  state.form = { key, callId, label: pop ? callerText(pop) : "" };
  state.formDirty = false;
  state.pendingPop = null;
  $("switch-banner").hidden = true;
  clearErrors();
  writeForm({});
  setDraftStatus("");
  renderFormHeader();

  const local = readLocalDraft(key);
  let server = null;
  if (isCalltaker()) {
    try {
      const res = await api("GET", `/api/drafts/${encodeURIComponent(key)}`);
      if (res?.data) server = res;
    } catch {
      /* offline: the local copy is all there is */
    }
  }
  if (state.form.key !== key) return; // another bind happened meanwhile
  const newest = [local, server]
    .filter((d) => d && d.data && Object.keys(d.data).length)
    .sort((a, b) => Date.parse(b.updated_at || 0) - Date.parse(a.updated_at || 0))[0];
  if (newest) {
    const typedMeanwhile = state.formDirty ? readForm() : {};
    writeForm({ ...newest.data, ...nonEmpty(typedMeanwhile) });
    state.formDirty = true;
    saveLocalDraft(); // both copies now agree
    setDraftStatus(t("draft.restored"));
  }
  const e164 = pop?.caller?.e164;
  if (e164 && !$("f-callback_number").value) $("f-callback_number").value = e164;
  renderOtherDrafts();
}

function renderIntakeResult() {
  $("intake-result-text").textContent = t("intake.created", { r: "" });
}

const nonEmpty = (obj) => Object.fromEntries(Object.entries(obj).filter(([, v]) => String(v).trim()));

function renderFormHeader() {
  const el = $("intake-call");
  el.dataset.callId = state.form.callId ?? "";
  el.textContent = state.form.callId ? t("intake.forCall", { c: state.form.label || state.form.callId }) : t("intake.noCall");
}

/** Numbers go as numbers when they parse; anything else goes as typed so the server can say why. */
function payload() {
  const data = readForm();
  const body = {};
  for (const [name, raw] of Object.entries(data)) {
    const value = String(raw).trim();
    if (!value) continue;
    if (name === "latitude" || name === "longitude") {
      const n = Number(value.replace(",", "."));
      body[name] = Number.isFinite(n) ? n : value;
    } else if (name === "victims_count") {
      body[name] = /^\d+$/.test(value) ? Number(value) : value;
    } else body[name] = value;
  }
  if (state.form.callId) body.call_id = state.form.callId;
  return body;
}

function clearFieldError(name) {
  const el = $(`err-${name}`);
  if (!el) return;
  el.textContent = "";
  $(`f-${name}`).removeAttribute("aria-invalid");
}

function clearErrors() {
  for (const name of FIELDS) clearFieldError(name);
  $("intake-error").hidden = true;
}

function showFieldErrors(fields) {
  const unplaced = [];
  let first = null;
  for (const [name, message] of Object.entries(fields || {})) {
    const el = $(`err-${name}`);
    if (!el) {
      unplaced.push(`${name}: ${message}`);
      continue;
    }
    el.textContent = message;
    $(`f-${name}`).setAttribute("aria-invalid", "true");
    first ??= $(`f-${name}`);
  }
  $("intake-error").textContent = [t("intake.invalid"), ...unplaced].join(" ");
  $("intake-error").hidden = false;
  first?.focus();
}

async function onIntakeSubmit(ev) {
  ev.preventDefault();
  const button = $("intake-submit");
  if (button.disabled) return;
  button.disabled = true;
  clearErrors();
  $("intake-result").hidden = true;
  // A draft PUT landing after the POST would resurrect the draft the server just deleted.
  clearTimeout(state.draftTimer);
  await state.draftInFlight;
  const key = state.form.key;
  try {
    const res = await api("POST", "/api/incidents", payload());
    removeLocalDraft(key);
    state.lastReference = res.incident.reference;
    $("incident-reference").textContent = res.incident.reference;
    renderIntakeResult();
    $("intake-result").hidden = false;
    // The next report is a new one: keep it on the current call only while that call is still up.
    const stillOnCall = state.call && !state.callEnded && state.call.call_id === state.form.callId;
    await bindForm(stillOnCall ? state.call.call_id : null, stillOnCall ? state.call : null);
    $("intake-result").hidden = false;
    setDraftStatus("");
  } catch (err) {
    if (err.status === 422) showFieldErrors(err.body.fields);
    else {
      $("intake-error").textContent = errorText(err);
      $("intake-error").hidden = false;
    }
    // Whatever failed, the typed data is still in the form and in the local draft.
    flushServerDraft();
  } finally {
    button.disabled = false;
  }
}

async function onDiscard() {
  if (!(await confirmDialog(t("intake.discardConfirm")))) return;
  removeLocalDraft(state.form.key);
  writeForm({});
  clearErrors();
  if (isCalltaker()) {
    await state.draftInFlight;
    await api("PUT", `/api/drafts/${encodeURIComponent(state.form.key)}`, { data: {} }).catch(() => {});
  }
  state.formDirty = false;
  setDraftStatus("");
  const e164 = state.call?.call_id === state.form.callId ? state.call?.caller?.e164 : null;
  if (e164) $("f-callback_number").value = e164;
  renderOtherDrafts();
}

/** Drafts of other calls kept on this device (e.g. the call-taker started a new form meanwhile). */
function renderOtherDrafts() {
  if (!state.user) return;
  const prefix = draftKey("");
  const items = [];
  for (const k of Object.keys(localStorage)) {
    if (!k.startsWith(prefix)) continue;
    const key = k.slice(prefix.length);
    if (key === state.form.key) continue;
    const entry = readLocalDraft(key);
    if (!entry || !Object.values(entry.data).some((v) => String(v).trim() && v !== DEFAULT_PRIORITY)) continue;
    items.push({ key, entry });
  }
  $("other-drafts").hidden = !items.length;
  $("other-drafts-list").replaceChildren(
    ...items.map(({ key, entry }) =>
      h("li", {},
        `${entry.data.reporter_name || "—"} · ${entry.label || (key === "none" ? t("intake.noCall") : key)} · ${fmtDate(entry.updated_at)} `,
        h("button", { type: "button", class: "btn btn-small", onclick: () => openOtherDraft(key, entry) }, t("drafts.open")),
      ),
    ),
  );
}

async function openOtherDraft(key, entry) {
  if (state.formDirty) await flushServerDraft();
  const pop = state.call && String(state.call.call_id) === key ? state.call : null;
  const callId = key === "none" ? null : (pop?.call_id ?? key);
  await bindForm(callId, pop);
  if (!pop && entry.label) {
    state.form.label = entry.label;
    renderFormHeader();
  }
}

// ---------------------------------------------------------------- the call pop

function callerText(pop) {
  const c = pop.caller || {};
  if (c.withheld || (!c.e164 && !c.raw)) return t("pop.withheld");
  return c.e164 || c.raw;
}

async function onPop(pop) {
  const sameCall = state.call?.call_id === pop.call_id;
  state.call = pop;
  state.callEnded = false;
  if (!sameCall) {
    state.classified = null;
    delete $("classify-msg").dataset.classification;
    $("classify-msg").textContent = "";
    $("classify-note").value = "";
  }
  renderPop();
  if (!sameCall) $("pop-panel").scrollIntoView({ block: "nearest" }); // a new caller must be in view
  if (state.form.callId === pop.call_id) return; // a reconnect re-sent the call we are on
  if (state.formDirty && !formBlank()) {
    // Never overwrite a report in progress: ask whether it belongs to the new call or not.
    state.pendingPop = pop;
    $("switch-text").textContent = t("switch.text", { c: state.form.callId ? state.form.label : t("intake.noCall") });
    $("switch-banner").hidden = false;
    return;
  }
  await bindForm(pop.call_id, pop);
}

/** The report typed so far belongs to the new call (e.g. the pop came late): move it over. */
async function linkFormToPending() {
  const pop = state.pendingPop;
  if (!pop) return;
  const data = readForm();
  removeLocalDraft(state.form.key);
  if (isCalltaker()) {
    await state.draftInFlight;
    await api("PUT", `/api/drafts/${encodeURIComponent(state.form.key)}`, { data: {} }).catch(() => {});
  }
  state.form = { key: String(pop.call_id), callId: pop.call_id, label: callerText(pop) };
  state.pendingPop = null;
  $("switch-banner").hidden = true;
  writeForm(data);
  if (pop.caller?.e164 && !$("f-callback_number").value) $("f-callback_number").value = pop.caller.e164;
  renderFormHeader();
  saveLocalDraft();
  flushServerDraft();
  renderOtherDrafts();
}

/** Park the report in progress (it stays in both draft stores) and start fresh for the new call. */
async function freshFormForPending() {
  const pop = state.pendingPop;
  if (!pop) return;
  saveLocalDraft();
  await flushServerDraft();
  await bindForm(pop.call_id, pop);
}

function onCallEnded(callId) {
  if (state.call && state.call.call_id === callId) {
    state.callEnded = true;
    renderPop(); // the form stays: the call-taker finishes the intake after the call
  }
}

function renderPop() {
  const pop = state.call;
  $("pop-empty").hidden = !!pop;
  $("pop-body").hidden = !pop;
  $("pop-status").hidden = !pop;
  $("pop-panel").dataset.callId = pop?.call_id ?? "";
  $("pop-panel").classList.toggle("ended", !!pop && state.callEnded);
  for (const b of $("classify-buttons").querySelectorAll("button")) b.disabled = !pop;
  if (!pop) return;
  $("pop-status").textContent = state.callEnded ? t("pop.ended") : t("pop.active");
  $("pop-status").dataset.state = state.callEnded ? "ended" : "active";
  $("pop-caller").textContent = callerText(pop);
  $("pop-caller").classList.toggle("withheld", callerText(pop) === t("pop.withheld"));
  $("pop-wait").textContent = pop.wait_seconds == null ? "—" : t("pop.seconds", { n: Math.round(pop.wait_seconds) });
  $("pop-arrived").textContent = fmtDate(pop.arrived_at) || "—";
  $("pop-dialed").textContent = pop.dialed || "—";

  const hist = pop.history || {};
  const prev = hist.previous_calls ?? 0;
  $("pop-previous").textContent = hist.last_call_at ? `${prev} (${t("pop.lastCall")} ${fmtDate(hist.last_call_at)})` : String(prev);

  const flags = hist.flags || [];
  $("pop-flags").replaceChildren(
    ...(flags.length
      ? flags.map((f) =>
          h("li", { class: FLAGGING.has(f.kind) ? "flag flag-bad" : "flag", "data-testid": "pop-flag", "data-kind": f.kind },
            h("strong", {}, codeLabel(f.kind, "flag")), ` ${fmtDate(f.at)}`, f.note ? ` — ${f.note}` : ""))
      : [h("li", { class: "muted" }, t("pop.noFlags"))]),
  );
  const flagged = flags.some((f) => FLAGGING.has(f.kind));
  $("pop-warning").hidden = !flagged;
  $("pop-panel").classList.toggle("flagged", flagged);

  const incidents = hist.incidents || [];
  $("pop-incidents").replaceChildren(
    ...(incidents.length
      ? incidents.map((i) =>
          h("li", { "data-testid": "pop-incident" },
            h("strong", {}, i.reference), ` · ${categoryLabel(i.category)} · ${fmtDate(i.created_at)} · ${i.status ?? ""}`))
      : [h("li", { class: "muted" }, t("pop.noIncidents"))]),
  );

  const loc = pop.location;
  const parts = loc
    ? [loc.address, loc.subdistrict, loc.district, loc.landmark,
       loc.latitude != null && loc.longitude != null ? `${loc.latitude}, ${loc.longitude}` : null].filter(Boolean)
    : [];
  $("pop-location").textContent = parts.length ? parts.join(" · ") : t("pop.noLocation");
  $("pop-location").classList.toggle("muted", !parts.length);
  $("copy-location").hidden = !parts.length;
}

function categoryLabel(code) {
  const item = (state.schema?.categories || []).find((c) => c.code === code);
  return item ? itemLabel(item, "cat") : codeLabel(code, "cat");
}

/** Fill only empty location fields: the call-taker's own input beats the network's guess. */
function copyLocation() {
  const loc = state.call?.location;
  if (!loc) return;
  for (const name of LOCATION_FIELDS) {
    const el = $(`f-${name}`);
    if (!el.value.trim() && loc[name] != null) el.value = String(loc[name]);
  }
  onFormInput({ target: $("f-address") });
}

// ---------------------------------------------------------------- classification

async function classify(code) {
  const call = state.call;
  if (!call) return;
  const label = codeLabel(code, "cls");
  if (CONFIRM_CLASSIFICATIONS.has(code) && !(await confirmDialog(t("classify.confirm", { c: label })))) return;
  const body = { classification: code };
  const note = $("classify-note").value.trim();
  if (note) body.note = note;
  try {
    const res = await api("POST", `/api/calls/${encodeURIComponent(call.call_id)}/classification`, body);
    state.classified = res?.classification || code;
    $("classify-msg").classList.remove("error");
    renderClassified();
    if (isSupervisor()) loadPranks();
  } catch (err) {
    $("classify-msg").textContent = err.status === 422 ? Object.values(err.body.fields || {}).join(" ") || errorText(err) : errorText(err);
    $("classify-msg").classList.add("error");
  }
}

function renderClassified() {
  if (!state.classified) return;
  $("classify-msg").textContent = t("classify.done", { c: codeLabel(state.classified, "cls") });
  $("classify-msg").dataset.classification = state.classified;
}

/** A modal confirm in the page (not window.confirm): styled, keyboard-usable, "Cancel" focused first. */
function confirmDialog(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}

// ---------------------------------------------------------------- presence

function renderPresence() {
  const m = state.member;
  const el = $("presence-state");
  let text;
  let s;
  if (m === undefined) [text, s] = [t("presence.unknownState"), "unknown"];
  else if (m === null) [text, s] = [t("presence.out"), "out"];
  else if (m.paused) {
    [text, s] = [`${t("presence.paused")}${m.reason ? ` — ${codeLabel(m.reason, "reason")}` : ""}`, "paused"];
  } else [text, s] = [codeLabel(m.state, "state"), m.state || "unknown"];
  el.textContent = text;
  el.dataset.state = s;
  if (m?.paused && m.reason && [...$("presence-reason").options].some((o) => o.value === m.reason)) {
    $("presence-reason").value = m.reason; // the select shows the reason in force
  }
  const known = m !== undefined;
  const btn = (a) => $("presence-panel").querySelector(`[data-action="${a}"]`);
  // Offer what makes sense for the reported state; when the state is unknown, offer everything.
  btn("login").disabled = known && m !== null;
  btn("logout").disabled = known && m === null;
  btn("pause").disabled = known && (m === null || m.paused);
  btn("unpause").disabled = known && (m === null || !m.paused);
}

function setMember(member) {
  state.member = member;
  $("presence-msg").textContent = "";
  renderPresence();
}

async function requestPresence(action) {
  const body = { action };
  if (action === "pause") body.reason = $("presence-reason").value;
  $("presence-msg").classList.remove("error");
  try {
    await api("POST", "/api/presence", body);
    // Not optimistic: the state changes when the server reports it (a `member` message).
    $("presence-msg").textContent = t("presence.sent");
    // If the live link is down, ask for the state instead of waiting for a message that won't come.
    setTimeout(async () => {
      if (!$("presence-msg").textContent) return;
      try {
        setMember((await api("GET", "/api/presence")).member ?? null);
      } catch {
        /* keep waiting for the WebSocket */
      }
    }, 3000);
  } catch (err) {
    $("presence-msg").textContent = errorText(err);
    $("presence-msg").classList.add("error");
  }
}

// ---------------------------------------------------------------- WebSocket

function setConn(s, seconds) {
  const el = $("conn");
  el.dataset.state = s;
  el.textContent = s === "reconnecting" ? t("conn.reconnecting", { s: seconds }) : t(`conn.${s}`);
}

function connectWs() {
  if (state.wsStopped) return;
  setConn("connecting");
  const url = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/ws`;
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => {
    state.wsBackoff = WS_MIN_BACKOFF_MS;
    setConn("online");
    armWatchdog(ws);
    // Anything may have happened while we were away (a pop, a hangup, a pause): re-read it.
    restoreCurrent();
  };
  ws.onmessage = (ev) => {
    armWatchdog(ws);
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "pop" && msg.call) onPop(msg.call);
    else if (msg.type === "call_ended") onCallEnded(msg.call_id);
    else if (msg.type === "member") setMember(msg.member ?? null);
    else if (msg.type === "hello" && msg.user) applyUser(msg.user);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    clearTimeout(state.wsWatchdog);
    scheduleReconnect();
  };
}

function armWatchdog(ws) {
  clearTimeout(state.wsWatchdog);
  state.wsWatchdog = setTimeout(() => ws.close(), WS_SILENCE_MS);
}

function scheduleReconnect() {
  if (state.wsStopped) return setConn("offline");
  const delay = state.wsBackoff;
  state.wsBackoff = Math.min(state.wsBackoff * 2, WS_MAX_BACKOFF_MS);
  setConn("reconnecting", Math.ceil(delay / 1000));
  state.reconnectTimer = setTimeout(async () => {
    // A refused handshake looks like a network drop; if the session expired, show the login
    // instead of knocking forever.
    try {
      await api("GET", "/api/me");
    } catch (err) {
      if (err.status === 401) return onAuthLost();
    }
    connectWs();
  }, delay);
}

function stopWs() {
  state.wsStopped = true;
  clearTimeout(state.reconnectTimer);
  clearTimeout(state.wsWatchdog);
  const ws = state.ws;
  state.ws = null;
  ws?.close();
  setConn("offline");
}

async function restoreCurrent() {
  try {
    const cur = await api("GET", "/api/console/current");
    if (cur.call) await onPop(cur.call);
    else if (state.call && !state.callEnded) onCallEnded(state.call.call_id); // it ended while we were away
    if (isCalltaker()) setMember(cur.member ?? null);
  } catch {
    /* the next reconnect tries again */
  }
}

// ---------------------------------------------------------------- supervisor: prank log

async function loadPranks() {
  const body = $("prank-rows");
  try {
    const res = await api("GET", "/api/pranks?limit=100");
    const rows = res.pranks || [];
    body.replaceChildren(
      ...(rows.length
        ? rows.map((p) =>
            h("tr", { "data-testid": "prank-row" },
              h("td", {}, fmtDate(p.at)),
              h("td", { class: "mono" }, p.number || t("pop.withheld")),
              h("td", {}, h("span", { class: FLAGGING.has(p.kind) ? "flag-bad" : "" }, codeLabel(p.kind, "flag"))),
              h("td", {}, p.note || ""),
              h("td", {}, p.by || ""),
              h("td", { class: "mono" }, p.call_id ? String(p.call_id) : "")))
        : [h("tr", {}, h("td", { colSpan: 6, class: "muted" }, t("pranks.empty")))]),
    );
  } catch (err) {
    body.replaceChildren(h("tr", {}, h("td", { colSpan: 6, class: "error" }, errorText(err))));
  }
}

// ---------------------------------------------------------------- wiring

function renderAll() {
  renderPresence();
  renderClassified();
  renderIntakeResult();
  renderPop();
  renderFormHeader();
  if (state.ws) setConn("online");
  else if (state.wsStopped) setConn("offline");
  if (isSupervisor() && !$("prank-panel").hidden) loadPranks();
  if (state.pendingPop) {
    $("switch-text").textContent = t("switch.text", { c: state.form.callId ? state.form.label : t("intake.noCall") });
  }
  renderOtherDrafts();
}

function wire() {
  $("login-form").addEventListener("submit", onLoginSubmit);
  $("logout").addEventListener("click", onLogout);
  $("lang").addEventListener("change", (ev) => changeLanguage(ev.target.value, { save: true }));
  $("intake-form").addEventListener("input", onFormInput);
  $("intake-form").addEventListener("submit", onIntakeSubmit);
  $("intake-form").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      $("intake-form").requestSubmit();
    } else if (ev.key === "Enter" && ev.target.tagName === "INPUT") {
      ev.preventDefault(); // a stray Enter in a text field must not send a half-finished report
    }
  });
  $("intake-discard").addEventListener("click", onDiscard);
  $("switch-link").addEventListener("click", linkFormToPending);
  $("switch-fresh").addEventListener("click", freshFormForPending);
  $("copy-location").addEventListener("click", copyLocation);
  $("prank-refresh").addEventListener("click", loadPranks);
  for (const b of $("classify-buttons").querySelectorAll("button")) {
    b.addEventListener("click", () => classify(b.dataset.cls));
  }
  for (const b of $("presence-panel").querySelectorAll("[data-action]")) {
    b.addEventListener("click", () => requestPresence(b.dataset.action));
  }
  // Last chance on close/reload: the local copy is already current; try to get the server one too.
  window.addEventListener("pagehide", () => {
    if (state.draftTimer && state.user) flushServerDraft({ keepalive: true });
  });
}

wire();
boot();
