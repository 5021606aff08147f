//! A distillation run on the server: a run names a succeeded run of the same model as its
//! teacher; its trainer learns that run's adapter's distributions on a 4-bit copy of the base.

use serde_json::json;

use crate::harness::{Backend, Site};

#[test]
fn a_run_is_distilled_from_a_finished_run_onto_a_4_bit_base() {
    let site = Site::new("distill", Backend::Sqlite);
    let key = site.token("member");
    let server = site.start(&[]);
    let dataset = server.upload_fixture(&key);
    let teacher = server.start_run(&key, &dataset, json!({"max_steps": 8, "pre_seq_len": 4}));
    assert_eq!(server.wait_for_run(&teacher, &key)["state"], "succeeded");
    let request = |teacher_run: &str| {
        json!({
            "model": "tiny", "train_dataset": dataset["id"], "preset": "quick",
            "settings": {"max_steps": 8, "pre_seq_len": 4, "quantization_bit": 4},
            "init_run": teacher, "teacher_run": teacher_run
        })
    };
    let refused = server.post("/api/v1/runs", &key, &request("ftjob-missing"));
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("teacher_run"), "{}", refused.text());
    let created = server.post("/api/v1/runs", &key, &request(&teacher));
    assert_eq!(created.status, 201, "{}", created.text());
    let student = created.json()["id"].as_str().unwrap().to_owned();
    let run = server.wait_for_run(&student, &key);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["teacher_run"], teacher.as_str());
    let events = server
        .get(&format!("/api/v1/runs/{student}/events.json"), &key)
        .json();
    let told = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.starts_with("distilling from"))
        .map(str::to_owned);
    let told = told.unwrap_or_else(|| panic!("no distillation note: {events}"));
    assert!(told.ends_with(&teacher), "{told}");
}
