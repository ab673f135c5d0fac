/*
 * The staff pages' service worker (scope PREFIX + "/"; PREFIX and VERSION are written above
 * this line by the server, `offline.py`). Network first, for the app shell only: the vaccinate
 * page (without its query: never a page showing a person), the UI's stylesheets and scripts and
 * the offline app's files are saved in Cache Storage whenever the registry serves them, and
 * served from there when it does not answer. Everything else (the API, the day's data, every
 * other page) goes to the network untouched: personal data is kept by the page in IndexedDB,
 * where sign-out and the age limit clear it.
 */
"use strict";

const CACHE = "staff-shell-" + VERSION;
const PAGE = PREFIX + "/vaccinate";
const SHELL = [
  PAGE,
  PREFIX + "/static/ui.css",
  PREFIX + "/static/tasks.css",
  PREFIX + "/static/ui.js",
  PREFIX + "/offline/app.js",
  PREFIX + "/offline/validate.js",
  PREFIX + "/offline/icon.svg",
  PREFIX + "/offline/manifest.webmanifest",
];

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    for (const url of SHELL) {
      try {
        const response = await fetch(url, { credentials: "same-origin", redirect: "manual" });
        if (response.ok && response.type === "basic") await cache.put(url, response);
      } catch (error) {
        // offline while installing: the page saves the files when it is next served
      }
    }
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("staff-shell-") && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

function shellKey(url) {
  if (url.origin !== self.location.origin) return null;
  if (url.pathname === PAGE) return PAGE;
  if (SHELL.includes(url.pathname)) return url.pathname;
  return null;
}

async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  const plain = new URL(request.url).search === "";
  try {
    const response = await fetch(request);
    // a sign-in redirect, an error page or a page with a query (a person chosen) is never kept
    if (plain && response.ok && response.type === "basic" && !response.redirected) {
      await cache.put(key, response.clone());
    }
    return response;
  } catch (error) {
    const hit = await cache.match(key, { ignoreVary: true });
    if (hit) return hit;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET") return;
  const key = shellKey(new URL(event.request.url));
  if (key === null) return;
  event.respondWith(networkFirst(event.request, key));
});
