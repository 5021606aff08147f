// Offline: the dashboard's own files, and the few API answers the in-browser chat starts from,
// are kept as they are fetched (network first, the cache when the network fails), so after one
// visit "In this browser" opens and answers with no server. The model's pieces and adapters are
// cached by the model's worker itself (cache "glmtune-models").
const SHELL = "glmtune-shell";
const FILES = ["/", "/style.css", "/app.js", "/local-worker.js", "/pkg/glmtune_web.js", "/pkg/glmtune_web_bg.wasm"];
const KEPT = [
  /^\/$/, /^\/index\.html$/, /^\/style\.css$/, /^\/app\.js$/, /^\/local-worker\.js$/, /^\/pkg\/[^/]+$/,
  /^\/api\/v1\/auth\/me$/, /^\/api\/v1\/models$/, /^\/api\/v1\/runs$/, /^\/api\/v1\/models\/[^/]+\/files$/,
];

// The dashboard's pages (routed in the browser): offline, a visit or reload of one is answered
// with the kept "/" (the same index.html), which routes it. Keep in step with web/src/lib.rs.
const PAGE = /^\/(datasets|models|runs|sweeps|teachers|compare|chats|local|keys)(\/|$)/;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== location.origin || request.headers.has("range")) return;
  const page = request.mode === "navigate" && PAGE.test(url.pathname);
  if (!page && !KEPT.some((pattern) => pattern.test(url.pathname))) return;
  event.respondWith((async () => {
    const cache = await caches.open(SHELL);
    try {
      const response = await fetch(request);
      if (response.ok && !page) await cache.put(request, response.clone());
      return response;
    } catch (error) {
      const kept = await cache.match(page ? "/" : request, { ignoreSearch: false });
      if (kept) return kept;
      throw error;
    }
  })());
});
