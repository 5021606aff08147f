//! A server killed with SIGKILL while a run trains, then restarted, resumes the run from its last
//! checkpoint and ends with the same adapter as a run that was never interrupted. A server
//! stopped with SIGTERM checkpoints its run first. Runs still start after the binary is replaced.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, Server, Site};
use crate::on_both_backends;

const FILES: [&str; 2] = ["pytorch_model.bin", "adapter.safetensors"];

fn start_run(server: &Server, key: &str, dataset: &serde_json::Value) -> String {
    // Dropout and shuffling on, so that resuming must restore the random state too.
    let settings = json!({"max_steps": 200, "save_steps": 10, "logging_steps": 1, "pre_seq_len": 4, "prefix_dropout": 0.1});
    server.start_run(key, dataset, settings)
}

fn wait_for_step(server: &Server, key: &str, id: &str, step: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = server.get(&format!("/api/v1/runs/{id}"), key).json();
        assert_ne!(
            run["state"], "succeeded",
            "the run finished before the server was stopped"
        );
        if run["step"].as_i64().unwrap() >= step {
            return;
        }
        assert!(Instant::now() < deadline, "{run}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn killed_server_resumes_the_run(backend: Backend) {
    let site = Site::new("restart", backend);
    let key = site.token("member");
    let mut server = site.start(&[]);
    let dataset = server.upload_fixture(&key);
    let interrupted = start_run(&server, &key, &dataset);
    wait_for_step(&server, &key, &interrupted, 25);
    server.signal("KILL");
    let _ = server.child.wait();
    let run_dir = site.data_dir.join("runs").join(&interrupted);
    // The trainer died with the server: its log stops growing.
    let size = || {
        std::fs::metadata(run_dir.join("trainer_log.jsonl"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let before = size();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(size(), before, "the trainer outlived the server");
    assert!(!run_dir.join("pytorch_model.bin").exists());

    let server = site.start(&[]);
    let run = server.wait_for_run(&interrupted, &key);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["attempts"], 2);
    let events = server
        .get(&format!("/api/v1/runs/{interrupted}/events.json"), &key)
        .json();
    let messages: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("server restarted")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("resuming from")),
        "{messages:?}"
    );
    // Each step is reported once, in order, across the restart.
    let steps: Vec<i64> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "metrics")
        .map(|e| e["data"]["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, (1..=200).collect::<Vec<_>>());

    let straight = start_run(&server, &key, &dataset);
    let run = server.wait_for_run(&straight, &key);
    assert_eq!(
        (run["state"].clone(), run["attempts"].clone()),
        (json!("succeeded"), json!(1))
    );
    for file in FILES {
        let a = std::fs::read(site.data_dir.join("runs").join(&straight).join(file)).unwrap();
        let b = std::fs::read(run_dir.join(file)).unwrap();
        assert!(
            a == b,
            "{file} differs between the interrupted and the straight run"
        );
    }
}
on_both_backends!(killed_server_resumes_the_run);

#[test]
fn sigterm_checkpoints_running_jobs_then_stops() {
    let site = Site::new("sigterm", Backend::Sqlite);
    let key = site.token("member");
    let mut server = site.start(&[]);
    let dataset = server.upload_fixture(&key);
    let id = start_run(&server, &key, &dataset);
    wait_for_step(&server, &key, &id, 3);
    // A dashboard following the run must not hold the shutdown up.
    let (address, auth) = (server.address.clone(), format!("Bearer {key}"));
    let path = format!("/api/v1/runs/{id}/events");
    // The follower says when its stream has started; a fixed pause could end before it
    // connects on a loaded machine, and the server would be gone.
    let (started, stream_started) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {address}\r\nAuthorization: {auth}\r\n\r\n"
        )
        .unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        let mut told = false;
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..n]);
            if !told && String::from_utf8_lossy(&received).contains("event: metrics") {
                let _ = started.send(());
                told = true;
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    });
    stream_started
        .recv_timeout(Duration::from_secs(60))
        .expect("the event stream did not start");
    server.signal("TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    let followed = follower.join().unwrap();
    assert!(followed.contains("event: metrics"), "{followed}");
    let server = site.start(&[]);
    let run = server.get(&format!("/api/v1/runs/{id}"), &key).json();
    // Back in the queue (or already resumed by the new server), with a checkpoint past step 3.
    let steps = server.checkpoint_steps(&id, &key);
    assert!(
        steps.iter().any(|&s| s >= 3),
        "no shutdown checkpoint: {steps:?} {run}"
    );
    let events = server
        .get(&format!("/api/v1/runs/{id}/events.json"), &key)
        .json();
    assert!(
        events.to_string().contains("the server stopped"),
        "{events}"
    );
    assert_eq!(server.wait_for_run(&id, &key)["state"], "succeeded");
}

/// An upgrade in place replaces the binary under a running server: the runs it starts afterwards
/// still train with the binary it runs (not "No such file or directory", found by the soak).
#[test]
fn runs_train_after_the_binary_is_replaced() {
    let site = Site::new("replaced-binary", Backend::Sqlite);
    let key = site.token("member");
    let binary = site.data_dir.join("glmtune-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_glmtune"), &binary).unwrap();
    let server = site.start_binary(&binary, &[]);
    std::fs::remove_file(&binary).unwrap();
    let dataset = server.upload_fixture(&key);
    let id = server.start_run(&key, &dataset, json!({"max_steps": 2, "pre_seq_len": 4}));
    let run = server.wait_for_run(&id, &key);
    assert_eq!(run["state"], "succeeded", "{run}");
}
