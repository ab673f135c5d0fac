/*
 * The verification page's service worker (scope /verify; VERSION and SCOPE are written above
 * this line by the server). Network first: the page and its files come from the registry when
 * it answers, and from the copy in Cache Storage (saved by the page and refreshed here) when it
 * does not, so the page opens and verifies offline. The trust bundle is the page's own business
 * (it keeps its copy and its time), and nothing but GET requests of this scope is touched.
 */
"use strict";

const CACHE = "verify-page-" + VERSION;

self.addEventListener("install", () => self.skipWaiting());

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("verify-page-") && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

function inScope(url) {
  return url.origin === self.location.origin && (url.pathname === SCOPE || url.pathname.startsWith(SCOPE + "/"));
}

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && response.type === "basic") await cache.put(request, response.clone());
    return response;
  } catch (error) {
    const hit = (await cache.match(request, { ignoreVary: true })) ||
      (request.mode === "navigate" ? await cache.match(request, { ignoreVary: true, ignoreSearch: true }) : undefined);
    if (hit) return hit;
    throw error;
  }
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || !inScope(url)) return;
  if (url.pathname === SCOPE + "/trust.json" || url.pathname === SCOPE + "/sw.js") return;
  event.respondWith(networkFirst(event.request));
});
