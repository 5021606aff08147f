//! One module per page.

pub mod chats;
pub mod datasets;
pub mod login;
pub mod models;
pub mod run;
pub mod runs;

use leptos::prelude::*;

/// An error box that says what went wrong and, with details, every bad record.
#[component]
pub fn ErrorNote(error: crate::api::Failure) -> impl IntoView {
    let records: Vec<serde_json::Value> = error.details["invalid_records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    view! {
        <div class="error" role="alert">
            <p>{error.message.clone()}</p>
            {(!records.is_empty()).then(|| view! {
                <table class="issues">
                    <thead><tr><th>"Where"</th><th>"Field"</th><th>"Problem"</th></tr></thead>
                    <tbody>
                        {records.into_iter().map(|r| view! {
                            <tr>
                                <td>{r["location"].as_str().unwrap_or("").to_owned()}</td>
                                <td>{r["field"].as_str().unwrap_or("").to_owned()}</td>
                                <td>{r["message"].as_str().unwrap_or("").to_owned()}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </div>
    }
}
