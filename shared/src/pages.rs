//! The dashboard's page paths: the web app routes them in the browser (`web/src/lib.rs`), and the
//! server answers each with the app's `index.html` so that a page can be opened or reloaded by its
//! address. (`www/sw.js` lists the same first segments for offline visits.)

/// The first path segment of every dashboard page other than `/`.
pub const PAGES: [&str; 9] = [
    "datasets", "models", "runs", "sweeps", "teachers", "compare", "chats", "local", "keys",
];

/// Whether `path` is one of the dashboard's pages (`/runs/ID` included).
pub fn is_page(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    PAGES.contains(&first)
}
