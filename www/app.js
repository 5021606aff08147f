// The dashboard's entry: its wasm, and the service worker that keeps it working offline after a
// first visit. (A file rather than an inline script, so the Content-Security-Policy forbids inline
// scripts.)
import init from "/pkg/glmtune_web.js";

init({ module_or_path: "/pkg/glmtune_web_bg.wasm" });
if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js");
