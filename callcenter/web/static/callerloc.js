// Where the caller is, on the pop: positions from AML and from the SMS location link, with their
// accuracy radius (and the confidence it is quoted at), source and age; a button that texts the
// caller a location link; a button that copies the newest position into the intake's lat/lon.
//
// The server pushes every new position as {"type": "location", "call_id", "fix"} on the console's
// WebSocket; the pop itself carries the call's newest positions in `pop.fixes` (newest first).

import { api } from "./api.js";
import { currentLang } from "./i18n.js";

const WORDS = {
  id: {
    none: "Belum ada posisi dari ponsel penelepon",
    ago: "{n} lalu",
    s: "{n} dtk",
    m: "{n} mnt",
    h: "{n} jam",
    sources: { gps: "GPS", wifi: "Wi-Fi", cell: "BTS seluler", fused: "gabungan", browser: "browser", unknown: "tidak diketahui" },
    vias: { aml_https: "AML", aml_sms: "AML SMS", link: "tautan SMS", app: "aplikasi lapor" },
    sending: "Mengirim SMS…",
    sent: "Tautan lokasi terkirim lewat SMS. Menunggu penelepon membukanya…",
    failed: "SMS gagal: {e}",
    copied: "Koordinat disalin ke formulir.",
  },
  en: {
    none: "No position from the caller's phone yet",
    ago: "{n} ago",
    s: "{n} s",
    m: "{n} min",
    h: "{n} h",
    sources: { gps: "GPS", wifi: "Wi-Fi", cell: "cell tower", fused: "fused", browser: "browser", unknown: "unknown" },
    vias: { aml_https: "AML", aml_sms: "AML SMS", link: "SMS link", app: "report app" },
    sending: "Sending SMS…",
    sent: "Location link sent by SMS. Waiting for the caller to open it…",
    failed: "SMS failed: {e}",
    copied: "Coordinates copied into the form.",
  },
};

function w() {
  return WORDS[currentLang()] || WORDS.id;
}

function fill(text, vars) {
  return text.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

const $ = (id) => document.getElementById(id);
let current = null; // { callId, fixes: [...] }
let onFix = () => {};

/** How old a position is, from the device's own time when it gave one. */
function age(fix) {
  const at = Date.parse(fix.fixed_at || fix.received_at);
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  const words = w();
  if (s < 120) return fill(words.ago, { n: fill(words.s, { n: s }) });
  if (s < 7200) return fill(words.ago, { n: fill(words.m, { n: Math.round(s / 60) }) });
  return fill(words.ago, { n: fill(words.h, { n: Math.round(s / 3600) }) });
}

function describe(fix) {
  const words = w();
  const parts = [`${fix.latitude.toFixed(6)}, ${fix.longitude.toFixed(6)}`];
  if (fix.accuracy_m != null) {
    parts.push(`± ${Math.round(fix.accuracy_m)} m${fix.confidence ? ` (${fix.confidence} %)` : ""}`);
  }
  parts.push(words.sources[fix.source] || fix.source);
  parts.push(words.vias[fix.via] || fix.via);
  return parts.join(" · ");
}

function render() {
  const el = $("pop-fix");
  if (!el) return;
  const fix = current?.fixes[0];
  $("copy-fix").hidden = !fix;
  if (!fix) {
    el.textContent = w().none;
    el.classList.add("muted");
    for (const k of ["fixId", "source", "via", "accuracy"]) delete el.dataset[k];
    onFix(null);
    return;
  }
  el.classList.remove("muted");
  el.dataset.fixId = String(fix.id);
  el.dataset.source = fix.source;
  el.dataset.via = fix.via;
  el.dataset.accuracy = fix.accuracy_m == null ? "" : String(fix.accuracy_m);
  el.textContent = `${describe(fix)} · `;
  const when = document.createElement("span");
  when.id = "pop-fix-age";
  when.dataset.testid = "pop-fix-age";
  when.textContent = age(fix);
  el.append(when);
  onFix(fix);
}

/** The pop of a (new) call was rendered: show its positions. */
export function showCallLocation(pop) {
  const callId = pop?.call_id ?? null;
  if (!current || current.callId !== callId) {
    $("location-link-status").textContent = "";
    $("send-location-link").disabled = !callId;
  }
  current = callId ? { callId, fixes: [...(pop.fixes || [])] } : null;
  render();
}

/** A position pushed by the server: for the call on screen, the newest one wins. */
export function onLocationMessage(msg) {
  if (!current || msg.call_id !== current.callId || !msg.fix) return;
  if (current.fixes.some((f) => f.id === msg.fix.id)) return;
  current.fixes.unshift(msg.fix);
  current.fixes.sort((a, b) => Date.parse(b.received_at) - Date.parse(a.received_at) || b.id - a.id);
  render();
}

async function sendLink() {
  if (!current) return;
  const status = $("location-link-status");
  const button = $("send-location-link");
  button.disabled = true;
  status.textContent = w().sending;
  status.classList.remove("error");
  try {
    await api("POST", `/api/calls/${encodeURIComponent(current.callId)}/location-link`);
    status.textContent = w().sent;
    status.dataset.state = "sent";
  } catch (err) {
    status.textContent = fill(w().failed, { e: err.body?.error || err.message });
    status.dataset.state = "failed";
    status.classList.add("error");
  } finally {
    button.disabled = false;
  }
}

/** The call-taker asked for it: the newest position goes into the intake's latitude/longitude. */
function copyFix() {
  const fix = current?.fixes[0];
  if (!fix) return;
  for (const [name, value] of [["latitude", fix.latitude], ["longitude", fix.longitude]]) {
    const el = $(`f-${name}`);
    el.value = String(value);
    el.dispatchEvent(new Event("input", { bubbles: true })); // the draft autosave sees it
  }
  $("location-link-status").textContent = w().copied;
}

/** Wire the buttons once; `listener` hears every newest position, or null (the map follows it). */
export function wireCallLocation(listener) {
  if (listener) onFix = listener;
  $("send-location-link").addEventListener("click", sendLink);
  $("copy-fix").addEventListener("click", copyFix);
  setInterval(() => {
    const el = $("pop-fix-age");
    const fix = current?.fixes[0];
    if (el && fix) el.textContent = age(fix);
  }, 1000);
}
