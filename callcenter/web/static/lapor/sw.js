// Service worker of the report app (/lapor/): keeps the app shell so the app opens at once and offline
// (where it says to call 112). It NEVER caches an API answer: /lapor/api/ requests, and anything that
// is not a GET of a shell file, go to the network untouched. Shell files are network-first, so a
// deployed fix reaches every phone at the next open; the cache only answers when the network fails.
"use strict";

const CACHE = "lapor-shell-v1";
const SHELL = [
  "/lapor/",
  "/lapor/app.js",
  "/lapor/app.css",
  "/lapor/manifest.webmanifest",
  "/lapor/icon-192.png",
  "/lapor/icon-512.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n.startsWith("lapor-") && n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

function isShell(request) {
  if (request.method !== "GET") return false;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return false;
  if (url.pathname.startsWith("/lapor/api/")) return false;
  return SHELL.includes(url.pathname);
}

self.addEventListener("fetch", (event) => {
  if (!isShell(event.request)) return; // the network, uncached: API answers are never stored
  const key = new URL(event.request.url).pathname;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(key, copy));
        }
        return response;
      })
      .catch(() => caches.match(key).then((cached) => cached || Response.error())),
  );
});
