// The one place the console talks HTTP to the server (docs/console-api.md).
//
// Every request is same-origin with the session cookie; every state-changing request carries the
// CSRF token the server handed out with /api/login or /api/me (the cookie alone must not be enough
// to act, or any page the operator visits could post on their behalf).

let csrfToken = null;
let onAuthLost = () => {};

export function setCsrf(token) {
  csrfToken = token;
}

/** Called when a request answers 401: the session expired or was ended elsewhere. */
export function setAuthLostHandler(fn) {
  onAuthLost = fn;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status; // 0 = network failure
    this.body = body || {};
  }
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export async function api(method, path, body, { keepalive = false, retried = false } = {}) {
  const headers = { Accept: "application/json" };
  // FormData (a photo upload) goes as multipart: the browser sets the type with its boundary.
  const isForm = typeof FormData !== "undefined" && body instanceof FormData;
  if (body !== undefined && !isForm) headers["Content-Type"] = "application/json";
  if (UNSAFE.has(method) && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : isForm ? body : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      keepalive, // lets the last draft save finish while the page unloads
    });
  } catch {
    throw new ApiError(0, { error: "network" });
  }
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (res.ok) return data;
  // The token may have been rotated (a new login in another tab): fetch the current one, retry once.
  if (res.status === 403 && UNSAFE.has(method) && !retried && /csrf/i.test(data?.error || "")) {
    try {
      const me = await api("GET", "/api/me");
      csrfToken = me.csrf_token;
      return api(method, path, body, { keepalive, retried: true });
    } catch {
      /* fall through to the original error */
    }
  }
  if (res.status === 401 && path !== "/api/login" && path !== "/api/me") onAuthLost();
  throw new ApiError(res.status, data);
}
