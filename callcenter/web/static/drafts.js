// Drafts: a form being typed, kept so that a reload, a crash or a dropped link loses nothing
// (the call-taker's intake in console.js, a supervisor's quality review in quality.js).
//
// Why drafts go to two places: localStorage is synchronous and survives a reload, a browser crash
// and a dead network, so it is written on every input; the server copy (/api/drafts/{key}) survives
// a broken or swapped workstation and follows the user to another desk, so it is written too, but
// debounced to spare the server a request per keystroke. On load the newer of the two wins.

import { api } from "./api.js";

const DEBOUNCE_MS = 800;

/** The server key of a quality review's draft (store/quality.py review_draft_key). */
export const reviewDraftKey = (callId) => `review.${callId}`;
export const isReviewDraftKey = (key) => key.startsWith("review.");

const storageKey = (username, key) => `cc112.draft.${username}.${key}`;

export function readLocalDraft(username, key) {
  try {
    const entry = JSON.parse(localStorage.getItem(storageKey(username, key)) || "null");
    return entry && typeof entry.data === "object" ? entry : null;
  } catch {
    return null;
  }
}

/** `entry` is `{data, updated_at, ...}`; storage full or disabled only costs the local copy. */
export function saveLocalDraft(username, key, entry) {
  try {
    localStorage.setItem(storageKey(username, key), JSON.stringify(entry));
  } catch {
    /* the server copy still goes out */
  }
}

export function removeLocalDraft(username, key) {
  localStorage.removeItem(storageKey(username, key));
}

/** The keys of this user's drafts kept on this device. */
export function localDraftKeys(username) {
  const prefix = storageKey(username, "");
  return Object.keys(localStorage).filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
}

/** The server's draft `{data, updated_at}`, or null (none, or offline: the local copy is all there is). */
export async function readServerDraft(key) {
  try {
    const res = await api("GET", `/api/drafts/${encodeURIComponent(key)}`);
    return res?.data ? res : null;
  } catch {
    return null;
  }
}

/** The newer of several `{data, updated_at}` entries that hold something. */
export function newestDraft(...entries) {
  return entries
    .filter((d) => d && d.data && Object.keys(d.data).length)
    .sort((a, b) => Date.parse(b.updated_at || 0) - Date.parse(a.updated_at || 0))[0] || null;
}

/**
 * The server copy's writer: `schedule(fn)` runs `fn` once typing pauses; `put()` sends one draft at
 * once, chained on the previous save so two PUTs never arrive out of order. Await `settled()` before a
 * submit: a PUT landing after it would resurrect the draft the server just deleted.
 */
export class DraftSaver {
  constructor(delay = DEBOUNCE_MS) {
    this.delay = delay;
    this.timer = null;
    this.inFlight = Promise.resolve(null);
  }

  get pending() {
    return this.timer !== null;
  }

  schedule(fn) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      fn();
    }, this.delay);
  }

  cancel() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  /** Resolves to the server's answer `{updated_at}`, or null when the save failed. */
  put(key, data, { keepalive = false } = {}) {
    this.cancel();
    const run = this.inFlight.then(() =>
      api("PUT", `/api/drafts/${encodeURIComponent(key)}`, { data }, { keepalive }).then((res) => res || {}, () => null),
    );
    this.inFlight = run;
    return run;
  }

  async settled() {
    this.cancel();
    await this.inFlight;
  }
}
