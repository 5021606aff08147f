//! Training workers (`glmtune worker` on other machines): their devices, the base models on their
//! disks, the runs they hold leases on, and when each was last heard from. How to add one is
//! said on the page: a worker key, then the command on the GPU box.

use glmtune_shared::api::List;
use glmtune_shared::worker::Worker;
use leptos::prelude::*;

use crate::api;
use crate::pages::{loaded, Table};

/// Seconds as "12 s ago", "3 min ago", "2 h ago".
fn ago(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3600),
    }
}

#[component]
pub fn Workers() -> impl IntoView {
    let workers = LocalResource::new(|| api::get::<List<Worker>>("/api/v1/workers"));
    // Heartbeats move the list on: read it again every few seconds while the page is open.
    if let Ok(handle) =
        set_interval_with_handle(move || workers.refetch(), std::time::Duration::from_secs(5))
    {
        on_cleanup(move || handle.clear());
    }
    let now = move || (js_sys::Date::now() / 1000.0) as i64;
    view! {
        <section>
            <h1>"Workers"</h1>
            <p class="muted">"Machines that train this server's queued runs: make a worker key (API keys, role worker), then on the GPU box run "
                <code>"glmtune worker --server URL --token KEY --gpus 0,1 --model NAME=DIR"</code>
                ". A worker that goes quiet loses its runs; they resume on another from their last checkpoint."</p>
            {loaded(workers, move |list| view! {
                <Table class="workers" headers=&["Name", "Devices", "Models", "Training", "Last heard"]>
                    {list.data.into_iter().map(|w| view! {
                        <tr>
                            <td>{w.name.clone()}</td>
                            <td>{w.devices.iter().map(|d| d.device.clone()).collect::<Vec<_>>().join(", ")}</td>
                            <td class="mono">{w.models.iter().map(|m| format!("{} ({}…)", m.name, &m.sha256[..m.sha256.len().min(12)])).collect::<Vec<_>>().join(", ")}</td>
                            <td>{if w.runs.is_empty() { "idle".to_owned() } else { w.runs.join(", ") }}</td>
                            <td>{ago(now() - w.last_seen_at)}</td>
                        </tr>
                    }).collect_view()}
                </Table>
            }.into_any())}
        </section>
    }
}
