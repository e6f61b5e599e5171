// A citizen's report from the /lapor app, on the pop of the call-taker whose phone answered it in the
// queue: category, the verified number, when it was sent, the browser's position with its accuracy (also
// on the pop's map, as the newest position: pop.fixes), the photo if any, and the one-click call-back
// that rings the call-taker's own phone and then the citizen (POST /api/reports/{id}/callback).
//
// The server pushes the call-back's steps as {"type": "callback", "callback": {...}} like any call-back;
// the one whose call_id is the report's turn in the queue (the pop's call_id) is shown here.

import { api } from "./api.js";
import { codeLabel, currentLang, fmtDate, t } from "./i18n.js";

const WORDS = {
  id: {
    title: "Laporan dari aplikasi",
    category: "Kategori",
    number: "Nomor terverifikasi",
    sent: "Dikirim",
    position: "Posisi",
    noPosition: "Tanpa posisi",
    photo: "Foto",
    noPhoto: "Tanpa foto",
    callBack: "Telepon balik pelapor",
    requesting: "Meminta panggilan…",
  },
  en: {
    title: "Report from the app",
    category: "Category",
    number: "Verified number",
    sent: "Sent",
    position: "Position",
    noPosition: "No position",
    photo: "Photo",
    noPhoto: "No photo",
    callBack: "Call the reporter back",
    requesting: "Requesting call…",
  },
};

// Call-back outcomes that mean "still dialling": the button stays disabled meanwhile.
const CB_PENDING = new Set(["requesting", "pending", "calling"]);
const $ = (id) => document.getElementById(id);
let current = null; // { report, callId, callback: {outcome, message} | null }
let categories = () => [];

function w() {
  return WORDS[currentLang()] || WORDS.id;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "testid") node.dataset.testid = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function categoryText(code) {
  const item = categories().find((c) => c.code === code);
  return item ? codeLabel(item, "cat") : code;
}

function render() {
  const box = $("pop-report");
  if (!box) return;
  box.hidden = !current;
  if (!current) return box.replaceChildren();
  const r = current.report;
  const words = w();
  const position = r.latitude != null && r.longitude != null
    ? `${r.latitude.toFixed(6)}, ${r.longitude.toFixed(6)}${r.accuracy_m != null ? ` · ± ${Math.round(r.accuracy_m)} m` : ""}`
    : words.noPosition;
  const photo = r.photo_url
    ? el("a", { href: r.photo_url, target: "_blank", rel: "noopener" },
        el("img", { src: r.photo_url, alt: words.photo, class: "report-photo", testid: "report-photo" }))
    : el("span", { class: "muted" }, words.noPhoto);
  const cb = current.callback;
  const button = el("button", { type: "button", class: "btn btn-primary", testid: "report-callback" }, words.callBack);
  button.disabled = !!cb && CB_PENDING.has(cb.outcome);
  button.addEventListener("click", callBack);
  const status = el("span", { class: cb ? `cb-status cb-${cb.outcome}` : "cb-status", testid: "report-callback-status" },
    cb ? (cb.outcome === "requesting" ? words.requesting : cb.message || t(`cb.${cb.outcome}`)) : "");
  box.dataset.reportId = String(r.id);
  box.dataset.status = r.status;
  box.replaceChildren(
    el("h3", { class: "report-title" }, el("span", { class: "badge report-badge", testid: "report-badge" }, words.title), ` #${r.id}`),
    el("dl", { class: "facts" },
      el("dt", {}, words.category), el("dd", { testid: "report-category", "data-code": r.category }, categoryText(r.category)),
      el("dt", {}, words.number), el("dd", { class: "mono", testid: "report-number" }, r.number),
      el("dt", {}, words.sent), el("dd", { testid: "report-sent" }, fmtDate(r.created_at)),
      el("dt", {}, words.position), el("dd", { testid: "report-position" }, position),
      el("dt", {}, words.photo), el("dd", {}, photo)),
    el("p", { class: "report-actions" }, button, " ", status),
  );
}

async function callBack(ev) {
  if (!current) return;
  const mine = current;
  ev.currentTarget.disabled = true; // one click = one call to the citizen
  mine.callback = { outcome: "requesting" };
  render();
  try {
    const res = await api("POST", `/api/reports/${mine.report.id}/callback`, {});
    if (res?.report) mine.report = { ...mine.report, ...res.report };
    // The WebSocket may already have said how it went: a late answer must not bring back "calling".
    if (mine.callback?.outcome === "requesting") mine.callback = { outcome: res?.callback?.outcome || "calling", id: res?.callback?.id };
  } catch (err) {
    const message = err.status === 0 ? t("error.network") : err.body?.message || err.body?.error || t("error.generic", { s: err.status });
    mine.callback = { outcome: "error", message };
  }
  if (current === mine) render();
}

/** The pop of a (new) call was rendered: show its report, or nothing for a 112 caller. */
export function showReport(pop) {
  const report = pop?.report || null;
  if (!report) current = null;
  else if (!current || current.report.id !== report.id) current = { report, callId: pop.call_id, callback: null };
  else current.report = { ...current.report, ...report };
  render();
}

/** A call-back step pushed by the server: shown when it is the call-back of the report on screen. */
export function onReportCallback(msg) {
  const cb = msg.callback || {};
  if (!current || cb.call_id == null || cb.call_id !== current.callId) return;
  current.callback = { outcome: cb.outcome || "calling", id: cb.id };
  render();
}

/** Re-label on a language switch; `categoryList` gives the intake's categories (code + labels). */
export function wireReportPop(categoryList) {
  categories = categoryList;
}

export function rerenderReport() {
  render();
}
