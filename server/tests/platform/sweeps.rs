//! A sweep on the server: 4 trials in the queue, two at a time, halved at step 4 (two stopped
//! there); the server is killed while trials train and the sweep goes on after the restart; its
//! leaderboard is each trial's own evaluations; promoting a trial makes the sweep's chat model
//! answer. A cancelled sweep resumes to its end.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Backend, Server, Site};
use crate::on_both_backends;

/// The sweep of `server/tests/sweep.rs`'s grid, on the fixture's split.
fn request(train: &Value, validation: &Value, parallelism: u64) -> Value {
    json!({
        "model": "tiny",
        "train_dataset": train["id"],
        "validation_dataset": validation["id"],
        "preset": "quick",
        "settings": {
            "max_steps": 8, "eval_steps": 2, "save_steps": 100, "logging_steps": 1,
            "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "max_source_length": 24, "max_target_length": 16, "prefix_dropout": 0.0,
            "eval_samples": 0
        },
        "space": {"learning_rate": [0.02, 0.5], "pre_seq_len": [4, 8]},
        "halving": {"rungs": [4], "eta": 2},
        "parallelism": parallelism
    })
}

fn split(server: &Server, key: &str) -> (Value, Value) {
    let dataset = server.upload_fixture(key);
    let split = server.post(
        &format!("/api/v1/datasets/{}/split", dataset["id"].as_str().unwrap()),
        key,
        &json!({"validation_fraction": 0.25, "seed": 7}),
    );
    assert_eq!(split.status, 201, "{}", split.text());
    let split = split.json();
    (split["train"].clone(), split["validation"].clone())
}

fn sweep(server: &Server, key: &str, id: &str) -> Value {
    server.get(&format!("/api/v1/sweeps/{id}"), key).json()
}

fn wait_until(server: &Server, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let sweep = sweep(server, key, id);
        if done(&sweep) {
            return sweep;
        }
        assert!(Instant::now() < deadline, "{sweep:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A trial's evaluations as its run's events tell them: (step, eval_loss).
fn evaluations(server: &Server, key: &str, run: &str) -> Vec<(i64, f64)> {
    server
        .get(&format!("/api/v1/runs/{run}/events.json"), key)
        .json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "metrics" && e["data"]["eval_loss"].is_f64())
        .map(|e| {
            (
                e["data"]["step"].as_i64().unwrap(),
                e["data"]["eval_loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn a_sweep_survives_a_restart_and_ranks_its_trials(backend: Backend) {
    let site = Site::new("sweep", backend);
    let key = site.token("member");
    let mut server = site.start(&[]);
    let (train, validation) = split(&server, &key);

    // Refused with the field named: a rung before the first evaluation.
    let mut early = request(&train, &validation, 2);
    early["halving"]["rungs"] = json!([1]);
    let refused = server.post("/api/v1/sweeps", &key, &early);
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("halving.rungs"),
        "{}",
        refused.text()
    );

    let created = server.post("/api/v1/sweeps", &key, &request(&train, &validation, 2));
    assert_eq!(created.status, 201, "{}", created.text());
    let created = created.json();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["trials"].as_array().unwrap().len(), 4);
    // Never more trials in the queue than the sweep's parallelism.
    let active = |sweep: &Value| {
        sweep["trials"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| ["queued", "running"].contains(&t["run_state"].as_str().unwrap()))
            .count()
    };
    assert!(active(&created) <= 2, "{created:#}");
    // Killed once a trial waits at the rung.
    let paused = wait_until(&server, &key, &id, |s| {
        assert!(active(s) <= 2, "{s:#}");
        s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["run_state"] == "paused" && t["steps"] == 4)
    });
    assert_eq!(paused["state"], "running");
    server.signal("KILL");
    let _ = server.child.wait();

    let server = site.start(&[]);
    let done = wait_until(&server, &key, &id, |s| s["state"] != "running");
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let trials = done["trials"].as_array().unwrap();
    let stopped: Vec<&Value> = trials.iter().filter(|t| t["stopped_at"] == 4).collect();
    let completed: Vec<&Value> = trials
        .iter()
        .filter(|t| t["run_state"] == "succeeded")
        .collect();
    assert_eq!((stopped.len(), completed.len()), (2, 2), "{done:#}");
    for trial in &stopped {
        assert_eq!(trial["run_state"], "cancelled");
        assert_eq!(trial["steps"], 4);
    }
    // The leaderboard is each trial's own best evaluation, best first; at the rung every
    // stopped trial had evaluated worse than every one that went on.
    let mut previous = f64::NEG_INFINITY;
    let mut at_rung = std::collections::HashMap::new();
    for trial in trials {
        let run = trial["run_id"].as_str().unwrap();
        let evals = evaluations(&server, &key, run);
        let best = evals
            .iter()
            .copied()
            .fold((0, f64::INFINITY), |b, e| if e.1 < b.1 { e } else { b });
        assert_eq!(
            (
                trial["metric_step"].as_i64().unwrap(),
                trial["metric"].as_f64().unwrap()
            ),
            best,
            "{trial}"
        );
        assert!(best.1 >= previous, "{done:#}");
        previous = best.1;
        let rung = evals.iter().rfind(|e| e.0 <= 4).unwrap().1;
        at_rung.insert(run.to_owned(), rung);
    }
    for s in &stopped {
        for c in &completed {
            assert!(
                at_rung[s["run_id"].as_str().unwrap()] >= at_rung[c["run_id"].as_str().unwrap()]
            );
        }
    }

    // The sweep's chat model answers once a trial is promoted, with the best's adapter.
    let chat_model = done["chat_model"].as_str().unwrap();
    let ask = || {
        server.post(
            "/v1/chat/completions",
            &key,
            &json!({"model": chat_model, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 4}),
        )
    };
    assert_eq!(ask().status, 409, "not promoted yet");
    let promoted = server.post(&format!("/api/v1/sweeps/{id}/promote"), &key, &json!({}));
    assert_eq!(promoted.status, 200, "{}", promoted.text());
    assert_eq!(promoted.json()["promoted_run"], trials[0]["run_id"]);
    let answer = ask();
    assert_eq!(answer.status, 200, "{}", answer.text());
    // A stopped trial has no adapter to promote.
    let refused = server.post(
        &format!("/api/v1/sweeps/{id}/promote"),
        &key,
        &json!({"trial": stopped[0]["trial"]}),
    );
    assert_eq!(refused.status, 409, "{}", refused.text());
}
on_both_backends!(a_sweep_survives_a_restart_and_ranks_its_trials);

#[test]
fn a_cancelled_sweep_resumes_to_its_end() {
    let site = Site::new("sweep-cancel", Backend::Sqlite);
    let key = site.token("member");
    let server = site.start(&[]);
    let (train, validation) = split(&server, &key);
    let created = server.post("/api/v1/sweeps", &key, &request(&train, &validation, 1));
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let cancelled = server.post(&format!("/api/v1/sweeps/{id}/cancel"), &key, &json!({}));
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    let cancelled = wait_until(&server, &key, &id, |s| {
        s["trials"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| ["cancelled", "succeeded"].contains(&t["run_state"].as_str().unwrap()))
    });
    assert_eq!(cancelled["state"], "cancelled");
    let resumed = server.post(&format!("/api/v1/sweeps/{id}/resume"), &key, &json!({}));
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let done = wait_until(&server, &key, &id, |s| s["state"] != "running");
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let ended: Vec<(&str, Value)> = done["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["run_state"].as_str().unwrap(), t["stopped_at"].clone()))
        .collect();
    assert_eq!(
        ended
            .iter()
            .filter(|(state, _)| *state == "succeeded")
            .count(),
        2,
        "{done:#}"
    );
    // Its trials are the sweep's to move: one is not resumed on its own.
    let trial = &done["trials"][3]["run_id"];
    let refused = server.post(
        &format!("/api/v1/runs/{}/resume", trial.as_str().unwrap()),
        &key,
        &json!({}),
    );
    assert_eq!(refused.status, 409, "{}", refused.text());
}
