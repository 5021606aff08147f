// The in-browser model's thread: the dashboard's own wasm module, entered at local_worker().
import init, { local_worker } from "/pkg/glmtune_web.js";

await init({ module_or_path: "/pkg/glmtune_web_bg.wasm" });
local_worker();
