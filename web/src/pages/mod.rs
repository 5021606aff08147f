//! One module per page.

pub mod chats;
pub mod compare;
pub mod dataset_versions;
pub mod datasets;
pub mod keys;
pub mod local;
pub mod login;
pub mod models;
pub mod run;
pub mod runs;
pub mod settings_form;
pub mod sweeps;
pub mod teachers;
pub mod workers;

use glmtune_shared::error::InvalidRecords;
use leptos::prelude::*;

/// An error box that says what went wrong and, with details, every bad record.
#[component]
pub fn ErrorNote(error: crate::api::Failure) -> impl IntoView {
    let records = serde_json::from_value::<InvalidRecords>(error.details.clone())
        .map(|details| details.invalid_records)
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
                                <td>{r.location}</td>
                                <td>{r.field.unwrap_or_default()}</td>
                                <td>{r.message}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </div>
    }
}

/// The `<option>`s of every registered model, once the model list has loaded.
pub fn model_options(
    models: LocalResource<
        Result<glmtune_shared::api::List<glmtune_shared::api::ModelInfo>, crate::api::Failure>,
    >,
) -> impl Fn() -> Option<AnyView> + Copy {
    move || {
        models.get().and_then(Result::ok).map(|list| {
            list.data
                .into_iter()
                .map(|m| view! { <option value=m.name.clone()>{m.name.clone()}</option> })
                .collect_view()
                .into_any()
        })
    }
}

/// A resource's view: "Loading…", its error, or `render` of its value.
pub fn loaded<T: Clone + 'static>(
    resource: LocalResource<Result<T, crate::api::Failure>>,
    render: impl Fn(T) -> AnyView + 'static,
) -> impl Fn() -> AnyView {
    move || match resource.get() {
        None => view! { <p class="muted">"Loading…"</p> }.into_any(),
        Some(Err(error)) => view! { <ErrorNote error=error /> }.into_any(),
        Some(Ok(value)) => render(value),
    }
}

/// A table with a header row; the rows are its children. It scrolls sideways on its own when
/// wider than the screen, so the page never does.
#[component]
pub fn Table(
    #[prop(optional)] class: &'static str,
    headers: &'static [&'static str],
    children: Children,
) -> impl IntoView {
    view! {
        <div class="table-scroll">
            <table class=class>
                <thead><tr>{headers.iter().map(|h| view! { <th>{*h}</th> }).collect_view()}</tr></thead>
                <tbody>{children()}</tbody>
            </table>
        </div>
    }
}

/// The `<option>`s of every dataset (name and size), once the list has loaded.
pub fn dataset_options(
    datasets: LocalResource<
        Result<glmtune_shared::api::List<glmtune_shared::api::Dataset>, crate::api::Failure>,
    >,
) -> impl Fn() -> Option<AnyView> + Copy {
    move || {
        datasets.get().and_then(Result::ok).map(|list| {
            list.data
                .into_iter()
                .map(|d| {
                    let label = format!("{} ({} records)", d.name, d.records);
                    view! { <option value=d.id.clone()>{label}</option> }
                })
                .collect_view()
                .into_any()
        })
    }
}
