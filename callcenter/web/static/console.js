// The 112 call-taker console: login, queue presence, the call pop, the incident intake, call
// classification, dispatch to agencies with service-level alarms, the abandoned calls to call back
// (abandoned.js), (for supervisors) the prank log, and (for agency officers) their agency's
// assignments. Contracts: docs/console-api.md, docs/dispatch.md, docs/supervision.md.
//
// Principles, because this runs all shift long on a closed network:
// - the server is the truth: presence and call state are shown as the server reports them;
// - nothing typed is ever lost: the intake is saved locally on every keystroke and to the server
//   shortly after; a reload, a crash, a dropped network or an expired session all come back to it;
// - the live link heals itself: the WebSocket reconnects with backoff and re-reads the current state.

import { abandonedList } from "./abandoned.js";
import * as drafts from "./drafts.js";
import { myReviews } from "./quality.js";
import { api, ApiError, setAuthLostHandler, setCsrf } from "./api.js";
import { onLocationMessage, showCallLocation, wireCallLocation } from "./callerloc.js";
import { callMap } from "./callmap.js";
import { fieldMap } from "./fieldmap.js";
import { onReportCallback, showReport, wireReportPop } from "./reportpop.js";
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
// Incident flags (needs_water, trapped_people, ...) are checkboxes named "flags"; the form keeps
// them as a list of codes next to the text FIELDS, and the dispatch rules propose agencies by them.
const FLAGS_FIELD = "flags";
const LOCATION_FIELDS = ["address", "district", "subdistrict", "landmark", "latitude", "longitude"];
const FLAGGING = new Set(["prank", "hoax", "silent"]); // shown in red, and confirmed before sending
const CONFIRM_CLASSIFICATIONS = new Set(["prank", "hoax"]);
const DEFAULT_PRIORITY = "normal";
const WS_MIN_BACKOFF_MS = 500;
const WS_MAX_BACKOFF_MS = 10_000;
const WS_SILENCE_MS = 50_000; // the server pings every 20 s; this much silence means a dead link
// Call-takers get no message when a caller gives up in the queue: an open abandoned panel re-reads its
// list this often (and at once on a call-back message, or for supervisors on a queue abandon).
const ABANDONED_POLL_MS = 15_000;

const state = {
  user: null,
  schema: null,
  call: null, // the Pop on screen
  callEnded: false,
  member: undefined, // undefined = not known yet, null = not in the queue
  form: { key: "none", callId: null, label: "" }, // which call the intake belongs to
  formDirty: false, // the intake holds something the call-taker typed or restored
  drafts: new drafts.DraftSaver(), // the server copy of the intake draft
  pendingPop: null, // a new call waiting while the form still holds another call's report
  classified: null, // the classification the server confirmed for the call on screen
  lastReference: null, // reference of the incident just created
  ws: null,
  wsBackoff: WS_MIN_BACKOFF_MS,
  wsStopped: true,
  wsWatchdog: null,
  reconnectTimer: null,
  breaches: [], // sla_breach messages not yet dismissed, newest first
};

const isCalltaker = () => state.user?.role === "calltaker";
const isSupervisor = () => state.user?.role === "supervisor";
const isAgency = () => state.user?.role === "agency";

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
  $("agency-view").hidden = view !== "agency";
  if (view !== "console") $("sla-banner").hidden = true;
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
  if (user.role === "agency") {
    show("agency");
    state.wsStopped = false;
    connectWs(); // its onopen loads the list
    return;
  }
  if (!["calltaker", "supervisor"].includes(user.role)) {
    show("denied");
    return;
  }
  show("console");
  $("presence-panel").hidden = !isCalltaker();
  $("prank-panel").hidden = !isSupervisor();
  // A call-taker sees the unread count of reviews of their calls at login; the list reads on opening too.
  $("quality-panel").hidden = !isCalltaker();
  if (isCalltaker()) qualityReviews.load();
  // Folded or open as this user left it on this workstation (the "toggle" event then reads the list).
  $("abandoned-panel").open = localStorage.getItem(abandonedKey()) === "1";
  syncAbandoned();
  await loadSchema();
  // Bind the form before the WebSocket: restoreCurrent() then only needs to switch if a call is up.
  await bindForm(null, null);
  state.wsStopped = false;
  connectWs();
  if (isSupervisor()) loadPranks();
  const kept = readDispatchIncident();
  if (kept) openDispatch(kept);
}

function onAuthLost() {
  if (!state.user) return;
  stopWs();
  // Keep the form and the local draft: after logging in again the same user gets it back.
  saveLocalDraft();
  state.user = null;
  syncAbandoned(); // no more polling without a session
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
  resetDispatch();
  resetAgency();
  resetAbandoned();
  state.breaches = []; // alarms belong to the session that saw them
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
  flags: ["needs_water", "hazardous_material", "trapped_people", "child_involved", "violence", "road_blocked",
    "narcotics"].map((code) => ({ code })),
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
  fillFlagChoices(schema.flags || []);
  fillSubdistricts();
}

const flagBoxes = () => [...$("f-flags").querySelectorAll(`input[type="checkbox"][name="${FLAGS_FIELD}"]`)];
const checkedFlags = () => flagBoxes().filter((b) => b.checked).map((b) => b.value);

/** One checkbox per flag; what is ticked stays ticked, even a code this schema doesn't know (an older draft). */
function fillFlagChoices(items, checked = checkedFlags()) {
  const codes = items.map((item) => item.code);
  const extra = checked.filter((code) => !codes.includes(code)).map((code) => ({ code }));
  const ticked = new Set(checked);
  $("intake-flags").replaceChildren(
    ...[...items, ...extra].map((item) =>
      h("label", {},
        h("input", {
          type: "checkbox", name: FLAGS_FIELD, value: item.code, checked: ticked.has(item.code),
          "data-testid": `intake-flag-${item.code}`,
        }),
        h("span", {}, flagLabel(item.code)),
      ),
    ),
  );
}

function setFlags(codes) {
  const wanted = Array.isArray(codes) ? codes.filter((c) => typeof c === "string" && c) : [];
  fillFlagChoices(state.schema?.flags || FALLBACK_SCHEMA.flags, wanted);
}

function flagLabel(code) {
  const item = (state.schema?.flags || []).find((f) => f.code === code);
  return item ? itemLabel(item, "flag") : codeLabel(code, "flag");
}

function fillSubdistricts() {
  const district = (state.schema?.districts || []).find((d) => d.name === $("f-district").value);
  const names = district ? district.subdistricts : (state.schema?.districts || []).flatMap((d) => d.subdistricts);
  $("subdistricts").replaceChildren(...names.map((n) => h("option", { value: n })));
}

// ---------------------------------------------------------------- intake form and drafts
//
// Drafts go to this device and to the server (drafts.js says why); on load the newer of the two wins.

function readForm() {
  const data = {};
  for (const name of FIELDS) data[name] = $(`f-${name}`).value;
  data[FLAGS_FIELD] = checkedFlags();
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
  setFlags(data[FLAGS_FIELD]);
  fillSubdistricts();
}

const formBlank = () =>
  FIELDS.every((n) => n === "priority" || !String($(`f-${n}`).value).trim()) && !checkedFlags().length;

const readLocalDraft = (key) => drafts.readLocalDraft(state.user?.username, key);
const removeLocalDraft = (key) => drafts.removeLocalDraft(state.user?.username, key);

function saveLocalDraft() {
  if (!state.user) return;
  const entry = { data: readForm(), updated_at: new Date().toISOString(), label: state.form.label };
  drafts.saveLocalDraft(state.user.username, state.form.key, entry);
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
  if (isCalltaker()) state.drafts.schedule(() => flushServerDraft());
  renderOtherDrafts();
}

/** PUT the current form as the server draft; resolves to true when the server has it. */
function flushServerDraft({ keepalive = false } = {}) {
  state.drafts.cancel();
  if (!isCalltaker()) return Promise.resolve(false);
  const key = state.form.key;
  return state.drafts.put(key, readForm(), { keepalive }).then((res) => {
    if (state.form.key === key) {
      setDraftStatus(res ? t("draft.server", { t: fmtDate(res.updated_at || new Date(), false) }) : t("draft.serverFailed"));
    }
    return res !== null;
  });
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
  const server = isCalltaker() ? await drafts.readServerDraft(key) : null;
  if (state.form.key !== key) return; // another bind happened meanwhile
  const newest = drafts.newestDraft(local, server);
  if (newest) {
    const typedMeanwhile = state.formDirty ? readForm() : {};
    writeForm({ ...newest.data, ...nonEmpty(typedMeanwhile) });
    state.formDirty = true;
    saveLocalDraft(); // both copies now agree
    setDraftStatus(t("draft.restored"));
  }
  const e164 = pop?.caller?.e164;
  if (e164 && !$("f-callback_number").value) $("f-callback_number").value = e164;
  // A citizen's report from the app already says what happened: its category starts the intake.
  const reported = pop?.report?.category;
  if (reported && !$("f-category").value && [...$("f-category").options].some((o) => o.value === reported)) {
    $("f-category").value = reported;
  }
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
    if (name === FLAGS_FIELD) {
      if (raw.length) body[name] = raw;
      continue;
    }
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
  for (const name of [...FIELDS, FLAGS_FIELD]) clearFieldError(name);
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
    first ??= name === FLAGS_FIELD ? flagBoxes()[0] : $(`f-${name}`);
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
  await state.drafts.settled();
  const key = state.form.key;
  try {
    const res = await api("POST", "/api/incidents", payload());
    removeLocalDraft(key);
    state.lastReference = res.incident.reference;
    $("incident-reference").textContent = res.incident.reference;
    openDispatch(res.incident); // next step: send it to the agencies
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
  if (isCalltaker()) await state.drafts.put(state.form.key, {});
  state.formDirty = false;
  setDraftStatus("");
  const e164 = state.call?.call_id === state.form.callId ? state.call?.caller?.e164 : null;
  if (e164) $("f-callback_number").value = e164;
  renderOtherDrafts();
}

/** Drafts of other calls kept on this device (e.g. the call-taker started a new form meanwhile). */
function renderOtherDrafts() {
  if (!state.user) return;
  const items = [];
  for (const key of drafts.localDraftKeys(state.user.username)) {
    if (key === state.form.key || drafts.isReviewDraftKey(key)) continue;
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
  if (isCalltaker()) await state.drafts.put(state.form.key, {});
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
  $("pop-panel").classList.toggle("app-report", !!pop?.report);
  showReport(pop); // a citizen's report from the app: its own part of the pop
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
  showCallLocation(pop);
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
        const now = await api("GET", "/api/presence");
        setMember(now.pbx === false ? undefined : (now.member ?? null));
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

function rereadAll() {
  if (isAgency()) loadAgency();
  else {
    restoreCurrent();
    if (dispatchState.incident) loadDispatches();
    refreshAbandonedSoon(); // a caller may have given up, or a call-back ended, while we were away
  }
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
    // Anything may have happened while we were away (a pop, a hangup, a pause, a dispatch): re-read it.
    rereadAll();
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
    else if (msg.type === "pbx" && !msg.up) setMember(undefined); // the queue state is not known now
    else if (msg.type === "dispatch" && msg.dispatch) onDispatchMessage(msg.dispatch);
    else if (msg.type === "sla_breach") onSlaBreach(msg);
    else if (msg.type === "callback") onCallbackMessage(msg);
    else if (msg.type === "location") onLocationMessage(msg);
    else if (msg.type === "queue" && ABANDON_EVENTS.has(msg.event)) refreshAbandonedSoon();
    else if (msg.type === "hello" && msg.user) applyUser(msg.user);
    // The server's node lost its change signal for a while (database failover): news may be missing.
    else if (msg.type === "resync") rereadAll();
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
    if (cur.call) {
      await onPop(cur.call);
      if (cur.ended) onCallEnded(cur.call.call_id); // a citizen's report taken lately: its line is released
    } else if (state.call && !state.callEnded) onCallEnded(state.call.call_id); // it ended while we were away
    if (isCalltaker()) setMember(cur.pbx === false ? undefined : (cur.member ?? null));
  } catch {
    /* the next reconnect tries again */
  }
}


// ---------------------------------------------------------------- dispatch to agencies (centre)
//
// After an incident is submitted, the panel proposes agencies (the server's rules; proposed ones
// pre-ticked) and sends the incident to the ticked ones. From then on it shows each agency's state
// as the server reports it over the WebSocket: which line is ringing, who accepted, what the agency
// reports. Messages may come from the dispatch core (no updates, no incident) or from the agency
// endpoints (everything): they are merged, never trusted to be complete.

const FINAL_DISPATCH = new Set(["resolved", "cancelled"]);
const PROGRESS = ["accepted", "dispatched", "en_route", "on_scene", "resolved"];
const REPEATABLE = new Set(["dispatched", "en_route", "on_scene"]);
const SLA_LOW_SECONDS = 60;

const dispatchState = {
  incident: null, // {id, reference, category}
  agencies: [], // [{code, name, proposed}] from the proposal
  configured: true,
  checked: new Set(),
  byId: new Map(), // dispatch id → Dispatch (merged from every source)
  sla: null, // {due_at, met_at, breached_at}
  busy: false,
  refetchTimer: null,
  ticker: null,
  msg: null, // {text, isError, vars}: the panel's last message
};

const dispatchKey = () => `cc112.dispatch.${state.user?.username}`;

function readDispatchIncident() {
  try {
    const kept = JSON.parse(sessionStorage.getItem(dispatchKey()) || "null");
    return kept && Number.isInteger(kept.id) ? kept : null;
  } catch {
    return null;
  }
}

function resetDispatch() {
  clearInterval(dispatchState.ticker);
  clearTimeout(dispatchState.refetchTimer);
  Object.assign(dispatchState, {
    incident: null, agencies: [], configured: true, checked: new Set(), byId: new Map(), sla: null,
    busy: false, refetchTimer: null, ticker: null,
  });
  dispatchState.msg = null;
  renderDispatchMsg();
}

function closeDispatch() {
  sessionStorage.removeItem(dispatchKey());
  resetDispatch();
  renderDispatchChoices();
  renderDispatch();
}

/** Show the panel for `incident` (just created, or kept across a reload) and read its state. */
async function openDispatch(incident) {
  const same = dispatchState.incident?.id === incident.id;
  if (!same) {
    resetDispatch();
    dispatchState.incident = {
      id: incident.id, reference: incident.reference, category: incident.category, flags: incident.flags || [],
    };
    sessionStorage.setItem(dispatchKey(), JSON.stringify(dispatchState.incident));
  }
  clearInterval(dispatchState.ticker);
  dispatchState.ticker = setInterval(renderSla, 1000);
  renderDispatchChoices();
  renderDispatch();
  await Promise.all([loadProposal(), loadDispatches()]);
}

async function loadProposal() {
  const incident = dispatchState.incident;
  if (!incident) return;
  try {
    const res = await api("GET", `/api/incidents/${incident.id}/proposal`);
    if (dispatchState.incident?.id !== incident.id) return;
    dispatchState.configured = true;
    dispatchState.agencies = res.agencies || [];
    if (res.sla) dispatchState.sla = res.sla;
    const active = activeAgencies();
    dispatchState.checked = new Set(dispatchState.agencies.filter((a) => a.proposed && !active.has(a.code)).map((a) => a.code));
  } catch (err) {
    if (dispatchState.incident?.id !== incident.id) return;
    if (err.status === 503 && /not configured/.test(err.body?.error || "")) dispatchState.configured = false;
    else if (err.status === 404) return closeDispatch();
    else setDispatchMsg(errorText(err), true);
  }
  renderDispatchChoices();
  renderDispatch();
}

async function loadDispatches() {
  const incident = dispatchState.incident;
  if (!incident) return;
  try {
    const res = await api("GET", `/api/incidents/${incident.id}/dispatches`);
    if (dispatchState.incident?.id !== incident.id) return;
    for (const d of res.dispatches || []) mergeDispatch(d, { complete: true });
    if (res.sla) dispatchState.sla = res.sla;
  } catch {
    return; // the WebSocket keeps the panel current; the next reconnect reads again
  }
  renderDispatchChoices();
  renderDispatch();
}

function mergeDispatch(d, { complete = false } = {}) {
  const prev = dispatchState.byId.get(d.id);
  const merged = { ...(prev || {}), ...d };
  if (d.updates === undefined) merged.updates = prev?.updates || [];
  if (d.attempts === undefined) merged.attempts = prev?.attempts || [];
  if (!d.agency_name && prev?.agency_name) merged.agency_name = prev.agency_name;
  dispatchState.byId.set(d.id, merged);
  // A message without the agency's reports may hide one: read the full state shortly.
  return !complete && d.updates === undefined && prev && prev.status !== d.status;
}

function onDispatchMessage(d) {
  if (isAgency()) return onAgencyDispatch(d);
  if (!dispatchState.incident || d.incident_id !== dispatchState.incident.id) return;
  if (mergeDispatch(d)) {
    clearTimeout(dispatchState.refetchTimer);
    dispatchState.refetchTimer = setTimeout(loadDispatches, 400);
  }
  const inc = d.incident;
  if (inc && "sla_due_at" in inc) {
    dispatchState.sla = { due_at: inc.sla_due_at, met_at: inc.sla_met_at, breached_at: inc.sla_breached_at };
  } else if (d.accepted_at && dispatchState.sla && !dispatchState.sla.met_at) {
    dispatchState.sla = { ...dispatchState.sla, met_at: d.accepted_at };
  }
  renderDispatchChoices();
  renderDispatch();
}

/** Latest dispatch per agency (a failed agency called again has a newer row). */
function latestByAgency() {
  const latest = new Map();
  for (const d of dispatchState.byId.values()) {
    const cur = latest.get(d.agency);
    if (!cur || d.id > cur.id) latest.set(d.agency, d);
  }
  return latest;
}

/** Agencies being called or working the incident: not offered again (a second call helps nobody). */
function activeAgencies() {
  const active = new Set();
  for (const [code, d] of latestByAgency()) if (d.status !== "failed" && d.status !== "cancelled") active.add(code);
  return active;
}

function agencyName(code) {
  const fromProposal = dispatchState.agencies.find((a) => a.code === code)?.name;
  const fromDispatch = latestByAgency().get(code)?.agency_name;
  return fromProposal || fromDispatch || code;
}

/** `text` is a server message, or an i18n key with `vars` (re-translated when the language changes). */
function setDispatchMsg(text, isError = false, vars = null) {
  dispatchState.msg = text ? { text, isError, vars } : null;
  renderDispatchMsg();
}

function renderDispatchMsg() {
  const m = dispatchState.msg;
  $("dispatch-msg").textContent = m ? (m.vars ? t(m.text, m.vars) : m.text) : "";
  $("dispatch-msg").classList.toggle("error", !!m?.isError);
}

function renderDispatchChoices() {
  const box = $("dispatch-agencies");
  const active = activeAgencies();
  box.replaceChildren(
    ...dispatchState.agencies.map((a) => {
      const input = h("input", {
        type: "checkbox", value: a.code, "data-testid": `dispatch-agency-${a.code}`,
        checked: dispatchState.checked.has(a.code) && !active.has(a.code), disabled: active.has(a.code),
      });
      return h("label", { class: a.proposed ? "proposed" : "" }, input,
        h("span", {}, a.name, a.proposed ? h("span", { class: "tag" }, ` · ${t("dispatch.proposed")}`) : null));
    }),
  );
}

function renderDispatch() {
  const incident = dispatchState.incident;
  const panel = $("dispatch-panel");
  panel.hidden = !incident;
  panel.dataset.incidentId = incident?.id ?? "";
  if (!incident) return;
  // The flags explain part of the proposal (needs_water brings PDAM to a fire).
  $("dispatch-incident").textContent = [
    t("dispatch.forIncident", { r: incident.reference }),
    categoryLabel(incident.category),
    ...(Array.isArray(incident.flags) ? incident.flags.map(flagLabel) : []),
  ].join(" · ");
  $("dispatch-hint").textContent = dispatchState.configured ? t("dispatch.choose") : t("dispatch.notConfigured");
  $("dispatch-hint").classList.toggle("error", !dispatchState.configured);
  $("dispatch-submit").hidden = !dispatchState.configured;
  $("dispatch-submit").disabled = dispatchState.busy;
  $("dispatch-submit").textContent = dispatchState.busy ? t("dispatch.sending") : t("dispatch.submit");
  const latest = [...latestByAgency().values()].sort((a, b) => a.id - b.id);
  $("dispatch-status").replaceChildren(
    ...(latest.length ? latest.map(renderDispatchStatus) : [h("li", { class: "muted small" }, t("dispatch.noDispatches"))]),
  );
  renderSla();
  renderDispatchMsg();
}

function attemptText(a) {
  const outcome = a.outcome ? codeLabel(a.outcome, "outcome") : t("outcome.pending");
  return `${fmtDate(a.started_at, false)} · ${a.line} · ${outcome}${a.reason && a.outcome !== "accepted" ? ` (${a.reason})` : ""}`;
}

function photoLink(u) {
  if (!u.photo_url) return null;
  return h("a", { class: "thumb", href: u.photo_url, target: "_blank", rel: "noopener", title: t("dispatch.photo") },
    h("img", { src: u.photo_url, alt: t("dispatch.photo"), loading: "lazy", "data-testid": "dispatch-photo" }));
}

function updatesList(updates) {
  return h("ul", { class: "timeline" },
    ...updates.map((u) =>
      h("li", { "data-testid": "dispatch-update", "data-status": u.status },
        h("span", { class: "muted" }, fmtDate(u.at, false)),
        h("strong", {}, codeLabel(u.status, "dstatus")),
        u.note ? h("span", {}, `— ${u.note}`) : null,
        u.user ? h("span", { class: "muted" }, `(${u.user})`) : null,
        photoLink(u))));
}

/** Which line accepted; for the web, which officer (from the acceptance in the agency's reports). */
function acceptedText(d) {
  if (d.accepted_via !== "web") return d.accepted_line;
  const by = (d.updates || []).find((u) => u.status === "accepted")?.user || d.accepted_line.replace(/^web:?/, "");
  return by ? `web (${by})` : "web";
}

function renderDispatchStatus(d) {
  const accepted = d.accepted_line
    ? h("span", { class: "muted", "data-testid": "dispatch-accepted-line" }, t("dispatch.acceptedBy", { l: acceptedText(d) }))
    : null;
  const retry = d.status === "failed" && dispatchState.configured
    ? h("button", { type: "button", class: "btn btn-small", "data-testid": `dispatch-retry-${d.agency}`,
        onclick: () => sendDispatch([d.agency]) }, t("dispatch.retry"))
    : null;
  const attempts = d.attempts || [];
  const updates = (d.updates || []).filter((u) => u.status !== "accepted" || u.note || u.photo_url);
  return h("li", { "data-testid": `dispatch-status-${d.agency}`, "data-status": d.status, "data-dispatch-id": d.id },
    h("div", { class: "dstatus-head" },
      h("strong", {}, agencyName(d.agency)),
      h("span", { class: "dstatus-label" }, codeLabel(d.status, "dstatus")),
      accepted, retry),
    attempts.length
      ? h("details", { class: "small", open: d.status === "calling" || d.status === "failed" },
          h("summary", {}, `${t("dispatch.attempts")} (${attempts.length})`),
          h("ul", { class: "timeline" }, ...attempts.map((a) => h("li", { "data-testid": "dispatch-attempt" }, attemptText(a)))))
      : null,
    updates.length ? updatesList(updates) : null);
}

async function sendDispatch(codes = null) {
  const incident = dispatchState.incident;
  if (!incident || dispatchState.busy) return;
  const active = activeAgencies();
  const chosen = (codes || [...dispatchState.checked]).filter((c) => !active.has(c));
  if (!chosen.length) return setDispatchMsg("dispatch.noneChosen", true, {});
  dispatchState.busy = true;
  setDispatchMsg("");
  renderDispatch();
  try {
    const res = await api("POST", `/api/incidents/${incident.id}/dispatch`, { agencies: chosen });
    for (const d of res.dispatches || []) mergeDispatch(d, { complete: true });
    if (res.sla) dispatchState.sla = res.sla;
    for (const c of chosen) dispatchState.checked.delete(c);
    setDispatchMsg("dispatch.sent", false, { n: chosen.length });
  } catch (err) {
    if (err.status === 503) dispatchState.configured = false;
    setDispatchMsg(err.status === 422 ? Object.values(err.body.fields || {}).join(" ") || errorText(err) : errorText(err), true);
  } finally {
    dispatchState.busy = false;
    renderDispatchChoices();
    renderDispatch();
  }
}

// ---------------------------------------------------------------- service levels

function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

function renderSla() {
  const el = $("sla-countdown");
  const sla = dispatchState.sla;
  if (!dispatchState.incident || !sla?.due_at) {
    el.textContent = "";
    el.dataset.state = "";
    return;
  }
  const due = Date.parse(sla.due_at);
  const left = (due - Date.now()) / 1000;
  const metInTime = sla.met_at && Date.parse(sla.met_at) <= due;
  if (metInTime) {
    el.textContent = t("sla.met");
    el.dataset.state = "met";
  } else if (sla.breached_at || left <= 0) {
    el.textContent = `${t("sla.breached")} · ${t("sla.over", { t: clock(-left) })}`;
    el.dataset.state = "breached";
  } else {
    el.textContent = `${t("sla.due", { t: fmtDate(sla.due_at, false) })} · ${t("sla.left", { t: clock(left) })}`;
    el.dataset.state = left < SLA_LOW_SECONDS ? "low" : "running";
  }
}

function onSlaBreach(msg) {
  if (isAgency()) return;
  state.breaches = [msg, ...state.breaches.filter((b) => b.incident_id !== msg.incident_id)].slice(0, 5);
  if (dispatchState.incident?.id === msg.incident_id && dispatchState.sla) {
    dispatchState.sla = { ...dispatchState.sla, breached_at: dispatchState.sla.breached_at || new Date().toISOString() };
    renderSla();
  }
  renderSlaBanner();
}

function renderSlaBanner() {
  const banner = $("sla-banner");
  const list = state.breaches;
  banner.hidden = !list.length || isAgency() || !state.user;
  banner.dataset.incidentId = list[0]?.incident_id ?? "";
  $("sla-banner-list").replaceChildren(
    ...list.map((b) =>
      h("li", { "data-incident-id": b.incident_id },
        t("sla.banner", { r: b.reference || `#${b.incident_id}`, c: categoryLabel(b.category) }))),
  );
}

// ---------------------------------------------------------------- agency officers
//
// The officer's screen: their agency's assignments, newest first, each with what the responders
// need (where, who, how to get there, whom to call back), a button to accept one whose phone call
// was missed, and a form to report progress with a note and a photo. Cards are updated in place so
// a note being typed survives every live update.

const agencyState = { agency: null, byId: new Map(), cards: new Map(), fresh: new Set(), refetchTimer: null, error: "" };

function resetAgency() {
  clearTimeout(agencyState.refetchTimer);
  agencyState.agency = null;
  agencyState.byId = new Map();
  agencyState.cards = new Map();
  agencyState.fresh = new Set();
  agencyState.error = "";
  $("agency-list").replaceChildren();
}

async function loadAgency() {
  if (!isAgency()) return;
  try {
    const res = await api("GET", "/api/agency/dispatches?limit=100");
    agencyState.agency = res.agency;
    agencyState.error = "";
    const seen = new Set();
    for (const d of res.dispatches || []) {
      seen.add(d.id);
      mergeAgencyDispatch(d);
    }
    for (const id of [...agencyState.byId.keys()]) if (!seen.has(id)) agencyState.byId.delete(id);
  } catch (err) {
    agencyState.error = err.status === 403 ? t("denied.agency") : errorText(err);
  }
  renderAgency();
  agencyMap ??= fieldMap($("agency-map"), $("agency-map-status"));
  agencyMap.load();
}

/** The agency's map of its open incidents and units (fieldmap.js), made at the first load. */
let agencyMap = null;
let agencyMapTimer = null;

/** A dispatch changed (a report with a position, a new incident): reread the map once things settle. */
function refreshAgencyMap() {
  if (!agencyMap) return;
  clearTimeout(agencyMapTimer);
  agencyMapTimer = setTimeout(() => agencyMap.load(), 500);
}

function mergeAgencyDispatch(d) {
  const prev = agencyState.byId.get(d.id);
  const merged = { ...(prev || {}), ...d };
  if (d.updates === undefined) merged.updates = prev?.updates || [];
  if (d.incident === undefined && prev?.incident) merged.incident = prev.incident;
  agencyState.byId.set(d.id, merged);
  return merged;
}

function onAgencyDispatch(d) {
  if (agencyState.agency && d.agency !== agencyState.agency.code) return;
  const known = agencyState.byId.has(d.id);
  const merged = mergeAgencyDispatch(d);
  if (!known && merged.status === "calling") agencyState.fresh.add(d.id);
  refreshAgencyMap();
  if (!merged.incident || (d.updates === undefined && known)) {
    clearTimeout(agencyState.refetchTimer);
    agencyState.refetchTimer = setTimeout(loadAgency, 400);
  }
  renderAgency();
}

function agencyNext(d) {
  if (FINAL_DISPATCH.has(d.status)) return [];
  const next = [];
  const i = PROGRESS.indexOf(d.status);
  if (i >= 0 && i + 1 < PROGRESS.length) next.push(PROGRESS[i + 1]);
  if (REPEATABLE.has(d.status)) next.push(d.status);
  next.push("cancelled");
  return next;
}

function renderAgency() {
  if (!isAgency()) return;
  const ag = agencyState.agency;
  $("agency-name").textContent = ag ? ag.name || ag.code : "";
  $("agency-msg").textContent = agencyState.error;
  $("agency-msg").classList.toggle("error", !!agencyState.error);
  const list = $("agency-list");
  const rows = [...agencyState.byId.values()].sort(
    (a, b) => Date.parse(b.created_at || 0) - Date.parse(a.created_at || 0) || b.id - a.id,
  );
  for (const [id, card] of agencyState.cards) {
    if (!agencyState.byId.has(id)) {
      card.root.remove();
      agencyState.cards.delete(id);
    }
  }
  const cards = rows.map((d) => fillAgencyCard(d));
  const inOrder = cards.every((c, i) => list.children[i] === c);
  if (!inOrder || list.children.length !== cards.length) list.replaceChildren(...cards);
  if (!rows.length && !agencyState.error) list.replaceChildren(h("p", { class: "muted", "data-testid": "agency-empty" }, t("agency.empty")));
  document.title = agencyState.fresh.size ? `(${agencyState.fresh.size}) 112` : "112";
}

function agencyCard(id) {
  let card = agencyState.cards.get(id);
  if (card) return card;
  const root = h("article", { class: "panel agency-card", "data-testid": `agency-dispatch-${id}` });
  card = {
    root,
    head: h("h3", {}),
    facts: h("dl", { class: "facts" }),
    action: h("div", { class: "agency-action" }),
    timeline: h("div", {}),
    form: null,
  };
  root.append(card.head, h("div", { class: "agency-cols" }, card.facts, h("div", {}, card.action, card.timeline)));
  root.addEventListener("click", () => {
    if (agencyState.fresh.delete(id)) renderAgency();
  });
  agencyState.cards.set(id, card);
  return card;
}

function fact(label, value, testid) {
  if (value === null || value === undefined || value === "") return [];
  return [h("dt", {}, label), h("dd", { "data-testid": testid }, value)];
}

function fillAgencyCard(d) {
  const card = agencyCard(d.id);
  const inc = d.incident || {};
  card.root.dataset.status = d.status;
  card.root.classList.toggle("fresh", agencyState.fresh.has(d.id));
  card.head.replaceChildren(
    h("span", { "data-testid": "agency-reference" }, inc.reference || `#${d.incident_id}`),
    h("span", {}, inc.category ? codeLabel(inc.category, "cat") : ""),
    h("span", { class: "status-badge", "data-status": d.status, "data-testid": "agency-status" }, codeLabel(d.status, "dstatus")),
    ...(agencyState.fresh.has(d.id) ? [h("span", { class: "new-tag" }, t("agency.new"))] : []),
  );
  const place = [inc.address, inc.subdistrict, inc.district].filter(Boolean).join(", ");
  const coords = inc.latitude != null && inc.longitude != null ? `${inc.latitude}, ${inc.longitude}` : "";
  const victims = inc.victims_count != null
    ? [t("agency.victimsCount", { n: inc.victims_count }), inc.victims_condition].filter(Boolean).join(" — ")
    : inc.victims_condition;
  card.facts.replaceChildren(
    ...fact(t("agency.location"), [place, inc.landmark, coords].filter(Boolean).join(" · "), "agency-location"),
    ...fact(t("agency.victims"), victims, "agency-victims"),
    ...fact(t("agency.access"), inc.access_route, "agency-access"),
    ...fact(t("agency.callback"), inc.callback_number ? h("a", { href: `tel:${inc.callback_number}` }, inc.callback_number) : "", "agency-callback"),
    ...fact(t("agency.reporter"), inc.reporter_name, "agency-reporter"),
    ...fact(t("agency.notes"), inc.notes, "agency-notes"),
    ...fact(t("agency.received"), fmtDate(d.created_at), "agency-received"),
  );
  fillAgencyAction(card, d);
  const updates = (d.updates || []);
  card.timeline.replaceChildren(...(updates.length ? [updatesList(updates)] : []));
  return card.root;
}

function fillAgencyAction(card, d) {
  if (d.status === "calling" || d.status === "failed") {
    card.form = null;
    const button = h("button", { type: "button", class: "btn btn-primary btn-accept", "data-testid": `agency-accept-${d.id}` }, t("agency.accept"));
    button.addEventListener("click", () => acceptAgencyDispatch(d.id, button));
    card.action.replaceChildren(button, h("p", { class: "msg", "data-testid": "agency-accept-message", role: "status" }));
    return;
  }
  if (FINAL_DISPATCH.has(d.status)) {
    card.form = null;
    card.action.replaceChildren(h("p", { class: "muted" }, t("agency.final")));
    return;
  }
  if (!card.form) {
    card.form = buildUpdateForm(d.id);
    card.action.replaceChildren(card.form.root);
  }
  // Only the options change with the status; what the officer typed or chose stays.
  const select = card.form.status;
  const chosen = select.value;
  const next = agencyNext(d);
  select.replaceChildren(...next.map((s) => h("option", { value: s }, codeLabel(s, "dstatus"))));
  select.value = next.includes(chosen) && select.dataset.for === d.status ? chosen : next[0];
  select.dataset.for = d.status;
  card.form.label.textContent = t("agency.update");
}

function buildUpdateForm(id) {
  const status = h("select", { id: `upd-status-${id}`, name: "status", "data-testid": "agency-update-status" });
  const note = h("textarea", { id: `upd-note-${id}`, name: "note", rows: 2, maxLength: 2000, "data-testid": "agency-update-note" });
  const photo = h("input", { id: `upd-photo-${id}`, name: "photo", type: "file", accept: "image/jpeg,image/png", "data-testid": "agency-update-photo" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "agency-update-submit" }, t("agency.submit"));
  const msg = h("p", { class: "msg wide", role: "status", "data-testid": "agency-update-message" });
  const label = h("strong", { class: "wide" }, t("agency.update"));
  const root = h("form", { class: "agency-update", noValidate: true },
    label,
    h("label", { htmlFor: status.id }, t("agency.status")), status,
    h("label", { htmlFor: note.id }, t("agency.note")), note,
    h("label", { htmlFor: photo.id }, t("agency.photoLabel")), photo,
    h("div", { class: "wide form-actions" }, submit), msg);
  const form = { root, status, note, photo, submit, msg, label };
  root.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sendAgencyUpdate(id, form);
  });
  return form;
}

async function acceptAgencyDispatch(id, button) {
  button.disabled = true;
  button.textContent = t("agency.accepting");
  agencyState.fresh.delete(id);
  try {
    const res = await api("POST", `/api/dispatches/${id}/accept`);
    mergeAgencyDispatch(res.dispatch);
    renderAgency();
    refreshAgencyMap();
  } catch (err) {
    button.disabled = false;
    button.textContent = t("agency.accept");
    const msg = button.parentElement?.querySelector("[data-testid=agency-accept-message]");
    if (msg) {
      msg.textContent = errorText(err);
      msg.classList.add("error");
    }
    if (err.status === 409) loadAgency(); // someone (or the phone) was first: show what stands
  }
}

/** The browser's position within 3 s (a cached one up to a minute old will do), or null. */
function currentPosition() {
  if (!("geolocation" in navigator)) return Promise.resolve(null);
  return new Promise((resolve) => {
    navigator.geolocation.getCurrentPosition(resolve, () => resolve(null), { timeout: 3000, maximumAge: 60000 });
    setTimeout(() => resolve(null), 3500); // a permission prompt left open must not hold the report
  });
}

async function sendAgencyUpdate(id, form) {
  if (form.submit.disabled) return;
  const body = new FormData();
  body.append("status", form.status.value);
  body.append("note", form.note.value.trim());
  const file = form.photo.files?.[0];
  if (file) body.append("photo", file, file.name);
  form.submit.disabled = true;
  // Where the officer is, for the centre's map of field units: asked briefly, never in the way.
  const pos = await currentPosition();
  if (pos) {
    body.append("latitude", String(pos.coords.latitude));
    body.append("longitude", String(pos.coords.longitude));
    body.append("accuracy", String(pos.coords.accuracy));
  }
  form.msg.classList.remove("error");
  form.msg.textContent = "";
  try {
    const res = await api("POST", `/api/dispatches/${id}/updates`, body);
    form.note.value = "";
    form.photo.value = "";
    form.msg.textContent = t("agency.sent");
    mergeAgencyDispatch(res.dispatch);
    renderAgency();
  } catch (err) {
    let text = errorText(err);
    if (err.status === 413) text = t("agency.tooLarge");
    else if (err.status === 415) text = t("agency.badType");
    else if (err.status === 422) text = Object.values(err.body.fields || {}).join(" ") || text;
    form.msg.textContent = text;
    form.msg.classList.add("error");
    if (err.status === 422) loadAgency();
  } finally {
    form.submit.disabled = false;
  }
}

// ---------------------------------------------------------------- quality reviews (quality.js)

const qualityReviews = myReviews({ body: $("quality-body"), count: $("quality-count"), error: $("quality-error") });
$("quality-panel").addEventListener("toggle", () => { if ($("quality-panel").open && isCalltaker()) qualityReviews.load(); });

// ---------------------------------------------------------------- abandoned calls (abandoned.js)
//
// A folded panel under the classification: open, it lists the last 24 hours' callers who hung up
// before an answer, each with a call-back button (the PBX rings this user's softphone, then the
// citizen) and the call-back's outcome as the server reports it. It reads the list when opened, after
// a call-back message (the tries and the outcome come with the list), and every ABANDONED_POLL_MS
// while it is open and the page is in view; folded or hidden, it asks nothing.

// Queue events (supervisors only) after which the list may have grown.
const ABANDON_EVENTS = new Set(["abandoned", "hangup"]);
const abandonedState = { poll: null, soon: null };
const abandonedKey = () => `cc112.abandoned.open.${state.user?.username}`;
const abandoned = abandonedList({ body: $("ab-body"), error: $("ab-error"), compact: true, onRender: renderAbandonedCount });

const abandonedOpen = () =>
  !!state.user && (isCalltaker() || isSupervisor()) && $("abandoned-panel").open && document.visibilityState === "visible";

/** Start or stop reading the list to match the panel (opened, folded, page shown or hidden, session). */
function syncAbandoned() {
  clearInterval(abandonedState.poll);
  clearTimeout(abandonedState.soon);
  abandonedState.poll = null;
  if (!abandonedOpen()) return;
  abandoned.load();
  abandonedState.poll = setInterval(() => abandoned.load(), ABANDONED_POLL_MS);
}

/** A burst of messages (one per call-back step) becomes one read. */
function refreshAbandonedSoon() {
  if (!abandonedOpen()) return;
  clearTimeout(abandonedState.soon);
  abandonedState.soon = setTimeout(() => abandoned.load(), 300);
}

function onCallbackMessage(msg) {
  if (isAgency()) return;
  onReportCallback(msg); // the call-back of the report on the pop, if it is that one
  abandoned.onCallbackMessage(msg); // the outcome at once, folded or not: it is kept for the next render
  refreshAbandonedSoon();
}

/** The red count in the panel's header: calls in the list nobody has reached again yet. */
function renderAbandonedCount(rows) {
  const open = rows.filter((a) => !(a.callbacks || []).some((c) => c.outcome === "answered")).length;
  const el = $("abandoned-count");
  el.hidden = !open;
  el.textContent = String(open);
  el.title = t("ab.openCount", { n: open });
}

function resetAbandoned() {
  abandoned.reset();
  $("abandoned-count").hidden = true;
  syncAbandoned();
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
  qualityReviews.render();
  renderDispatchChoices();
  renderDispatch();
  renderSlaBanner();
  renderAgency();
  renderPresence();
  renderClassified();
  renderIntakeResult();
  renderPop();
  abandoned.render(); // re-labels the list (and its count) in the new language
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
  // Checkboxes (the flags) report through "change", the text fields through "input": each edit once.
  $("intake-form").addEventListener("input", (ev) => ev.target.type !== "checkbox" && onFormInput(ev));
  $("intake-form").addEventListener("change", (ev) => ev.target.type === "checkbox" && onFormInput(ev));
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
  wireCallLocation(callMap());
  wireReportPop(() => state.schema?.categories || []);
  $("prank-refresh").addEventListener("click", loadPranks);
  $("abandoned-panel").addEventListener("toggle", () => {
    if (state.user) localStorage.setItem(abandonedKey(), $("abandoned-panel").open ? "1" : "");
    syncAbandoned();
  });
  $("abandoned-refresh").addEventListener("click", () => abandoned.load());
  document.addEventListener("visibilitychange", syncAbandoned);
  $("dispatch-submit").addEventListener("click", () => sendDispatch());
  $("dispatch-close").addEventListener("click", closeDispatch);
  $("dispatch-agencies").addEventListener("change", (ev) => {
    if (ev.target.type !== "checkbox") return;
    if (ev.target.checked) dispatchState.checked.add(ev.target.value);
    else dispatchState.checked.delete(ev.target.value);
  });
  $("sla-dismiss").addEventListener("click", () => {
    state.breaches = [];
    renderSlaBanner();
  });
  $("agency-refresh").addEventListener("click", loadAgency);
  for (const b of $("classify-buttons").querySelectorAll("button")) {
    b.addEventListener("click", () => classify(b.dataset.cls));
  }
  for (const b of $("presence-panel").querySelectorAll("[data-action]")) {
    b.addEventListener("click", () => requestPresence(b.dataset.action));
  }
  // Last chance on close/reload: the local copy is already current; try to get the server one too.
  window.addEventListener("pagehide", () => {
    if (state.drafts.pending && state.user) flushServerDraft({ keepalive: true });
  });
}

wire();
boot();
