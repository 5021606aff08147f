//! Training workers on other machines (`glmtune worker`, here separate processes on 127.0.0.1):
//! a server that trains nothing itself, two workers leasing its queued runs; one killed mid-run,
//! whose run is requeued when its lease runs out, resumed by the other from the last checkpoint it
//! uploaded, and ends on the same adapter, bit for bit, as the runs nobody interrupted. Before
//! them, the protocol by hand: uploads that go on after a cut, hashes checked, and a lease that ran
//! out refused everywhere.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::harness::{fixture, Backend, Server, Site};
use crate::on_both_backends;

const ADAPTER: [&str; 2] = ["pytorch_model.bin", "adapter.safetensors"];

struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(site: &Site, server: &Server, key: &str, name: &str) -> Worker {
        let log = site.data_dir.join(format!("worker-{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_glmtune"))
            .args(["worker", "--server", &format!("http://{}", server.address)])
            .args(["--token", key, "--name", name, "--poll-seconds", "0.2"])
            .args(["--model", &format!("tiny={}", fixture("model"))])
            .arg("--work-dir")
            .arg(site.data_dir.join(format!("work-{name}")))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(server: &Server, method: &str, path: &str, key: &str, body: &[u8]) -> (u16, String) {
    let auth = format!("Bearer {key}");
    let response = server.call(
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    (response.status, response.text())
}

/// The last lines of a log.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The protocol by hand on the first queued run: returns once its lease has run out and the run
/// is queued again, untouched by what the late holder tried.
fn a_lease_by_hand(server: &Server, key: &str) {
    let registered = server.post(
        "/api/v1/workers",
        key,
        &json!({"name": "by-hand", "devices": [{"device": "cpu", "memory_bytes": null}], "models": [{"name": "tiny", "sha256": "0"}]}),
    );
    assert_eq!(registered.status, 200, "{}", registered.text());
    let worker = registered.json()["id"].as_str().unwrap().to_owned();
    let wrong_device = server.post(
        &format!("/api/v1/workers/{worker}/lease"),
        key,
        &json!({"device": "cuda:7"}),
    );
    assert_eq!(wrong_device.status, 400, "{}", wrong_device.text());
    let leased = server.post(
        &format!("/api/v1/workers/{worker}/lease"),
        key,
        &json!({"device": "cpu"}),
    );
    assert_eq!(leased.status, 200, "{}", leased.text());
    let lease = leased.json();
    let id = lease["id"].as_str().unwrap().to_owned();
    assert_eq!(lease["run"]["state"], "running");
    assert_eq!(lease["resume"], json!([]), "a new run starts afresh");
    // Its dataset by hash; no other.
    let sha = lease["train"]["sha256"].as_str().unwrap();
    let (status, text) = call(
        server,
        "GET",
        &format!("/api/v1/leases/{id}/datasets/{sha}"),
        key,
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(sha256(text.as_bytes()), sha);
    let other = "0".repeat(64);
    let (status, _) = call(
        server,
        "GET",
        &format!("/api/v1/leases/{id}/datasets/{other}"),
        key,
        b"",
    );
    assert_eq!(status, 404);

    // An upload cut after its first chunk goes on from what the server holds.
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let uploads = format!("/api/v1/leases/{id}/uploads?path=notes/blob.bin");
    let (status, _) = call(
        server,
        "POST",
        &format!("{uploads}&offset=0"),
        key,
        &content[..40_000],
    );
    assert_eq!(status, 200);
    // The answer was "lost": the worker sends the first chunk again, and is told where to go on.
    let (status, text) = call(
        server,
        "POST",
        &format!("{uploads}&offset=0"),
        key,
        &content[..40_000],
    );
    assert_eq!(status, 409, "{text}");
    let (_, text) = call(server, "GET", &uploads, key, b"");
    let held: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(held["bytes"], 40_000);
    let (status, _) = call(
        server,
        "POST",
        &format!("{uploads}&offset=40000"),
        key,
        &content[40_000..],
    );
    assert_eq!(status, 200);
    let commit = |sha: &str| {
        let body =
            json!({"files": [{"path": "notes/blob.bin", "sha256": sha, "bytes": content.len()}]});
        call(
            server,
            "POST",
            &format!("/api/v1/leases/{id}/commit"),
            key,
            body.to_string().as_bytes(),
        )
    };
    let (status, text) = commit(&"f".repeat(64));
    assert_eq!(status, 400, "a wrong hash is refused: {text}");
    // (and the bad copy dropped: it is sent again whole)
    let (status, _) = call(
        server,
        "POST",
        &format!("{uploads}&offset=0"),
        key,
        &content,
    );
    assert_eq!(status, 200);
    let (status, text) = commit(&sha256(&content));
    assert_eq!(status, 204, "{text}");
    let run_id = lease["run"]["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        server,
        "POST",
        &format!("/api/v1/leases/{id}/heartbeat"),
        key,
        b"",
    );
    assert_eq!(status, 200);

    // A worker key reads nothing but its leases' files.
    assert_eq!(
        server.get(&format!("/api/v1/runs/{run_id}"), key).status,
        403
    );
    // No more heartbeats: the lease runs out and the run waits in the queue again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // (Asking how much of an upload the server holds does not keep the lease.)
        let (status, _) = call(server, "GET", &uploads, key, b"");
        if status == 410 {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The late holder can neither report, upload, nor complete.
    let late = [
        (
            "POST",
            format!("/api/v1/leases/{id}/heartbeat"),
            String::new(),
        ),
        (
            "POST",
            format!("/api/v1/leases/{id}/log"),
            json!({"rows": [], "notes": ["late"]}).to_string(),
        ),
        ("POST", format!("{uploads}&offset=0"), "x".into()),
        (
            "POST",
            format!("/api/v1/leases/{id}/commit"),
            json!({"files": []}).to_string(),
        ),
        (
            "POST",
            format!("/api/v1/leases/{id}/complete"),
            json!({"outcome": "failed", "error": "late"}).to_string(),
        ),
        (
            "GET",
            format!("/api/v1/leases/{id}/datasets/{sha}"),
            String::new(),
        ),
    ];
    for (method, path, body) in late {
        let (status, text) = call(server, method, &path, key, body.as_bytes());
        assert_eq!(status, 410, "{method} {path}: {text}");
    }
}

fn workers_share_the_queue(backend: Backend) {
    let site = Site::new("workers", backend);
    let member = site.token("member");
    let worker_key = site.token("worker");
    // The server trains nothing itself; leases last 2 s without a heartbeat.
    let server = site.start(&["--max-concurrent-runs", "0", "--lease-seconds", "2"]);
    let dataset = server.upload_fixture(&member);
    // Dropout and shuffling on: a resumed run must restore the random state too.
    let settings = json!({"max_steps": 200, "save_steps": 10, "logging_steps": 1, "pre_seq_len": 4, "prefix_dropout": 0.1});
    let runs: Vec<String> = (0..3)
        .map(|_| server.start_run(&member, &dataset, settings.clone()))
        .collect();
    // And one evaluated on a validation set at its end, as the server would evaluate it.
    let evaluated = server.post(
        "/api/v1/runs",
        &member,
        &json!({"model": "tiny", "train_dataset": dataset["id"], "validation_dataset": dataset["id"], "preset": "quick",
                "settings": {"max_steps": 12, "eval_steps": 6, "eval_samples": 2, "pre_seq_len": 4}}),
    );
    assert_eq!(evaluated.status, 201, "{}", evaluated.text());
    let evaluated = evaluated.json()["id"].as_str().unwrap().to_owned();
    a_lease_by_hand(&server, &worker_key);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let first = server
            .get(&format!("/api/v1/runs/{}", runs[0]), &member)
            .json();
        if first["state"] != "running" {
            break first;
        }
        assert!(Instant::now() < deadline, "{first}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first["state"], "queued", "{first}");
    assert_eq!(first["error"], serde_json::Value::Null, "{first}");

    let mut a = Worker::start(&site, &server, &worker_key, "a");
    let b = Worker::start(&site, &server, &worker_key, "b");
    // Wait for worker a to be past a checkpoint of a run, then kill it outright.
    let workers = |key: &str| server.get("/api/v1/workers", key).json();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (killed, a_id) = loop {
        let listed = workers(&member);
        let a_row = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "a")
            .cloned();
        if let Some(a_row) = a_row {
            if let Some(run) = a_row["runs"].as_array().and_then(|r| r.first()) {
                let run = run.as_str().unwrap().to_owned();
                let now = server.get(&format!("/api/v1/runs/{run}"), &member).json();
                if now["step"].as_i64().unwrap() >= 25 {
                    break (run, a_row["id"].as_str().unwrap().to_owned());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "worker a never got far: {listed}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = a.child.kill();
    let _ = a.child.wait();

    let deadline = Instant::now() + Duration::from_secs(300);
    for run in runs.iter().chain([&evaluated]) {
        let ended = loop {
            let now = server.get(&format!("/api/v1/runs/{run}"), &member).json();
            if !["queued", "running"].contains(&now["state"].as_str().unwrap()) {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "{now}\na: {}\nb: {}",
                a.log(),
                tail(&b.log())
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            ended["state"],
            "succeeded",
            "{ended}\na: {}\nb: {}",
            a.log(),
            tail(&b.log())
        );
    }
    let killed_run = server
        .get(&format!("/api/v1/runs/{killed}"), &member)
        .json();
    assert_ne!(
        killed_run["worker"].as_str(),
        Some(a_id.as_str()),
        "{killed_run}"
    );
    let events = server
        .get(&format!("/api/v1/runs/{killed}/events.json"), &member)
        .json();
    let messages: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("worker a stopped heartbeating")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("resuming from")),
        "{messages:?}"
    );
    // Each step told once, in order, across the two workers.
    let steps: Vec<i64> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "metrics")
        .map(|e| e["data"]["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, (1..=200).collect::<Vec<_>>());
    // The same settings and data: every run ends on the same adapter, the resumed one too.
    for file in ADAPTER {
        let read =
            |run: &str| std::fs::read(site.data_dir.join("runs").join(run).join(file)).unwrap();
        let reference = read(&runs[0]);
        for run in &runs[1..] {
            assert!(
                read(run) == reference,
                "{file} of {run} differs from {}'s",
                runs[0]
            );
        }
    }
    // The evaluated run: its scores told with its end, its predictions uploaded.
    let events = server
        .get(&format!("/api/v1/runs/{evaluated}/events.json"), &member)
        .json();
    let scores: Vec<_> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "scores")
        .collect();
    assert_eq!(scores.len(), 1, "{events}");
    let evaluation = server.get(&format!("/api/v1/runs/{evaluated}/evaluation"), &member);
    assert_eq!(evaluation.status, 200, "{}", evaluation.text());
    assert_eq!(
        evaluation.json()["samples"].as_array().map(Vec::len),
        Some(2),
        "{}",
        evaluation.text()
    );
    // The dashboard's list: both workers, their devices and models, nothing leased now.
    let listed = workers(&member);
    let names: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "by-hand"], "{listed}");
    for worker in listed["data"].as_array().unwrap() {
        assert_eq!(worker["runs"], json!([]), "{listed}");
        assert_eq!(worker["models"][0]["name"], "tiny", "{listed}");
    }
}
on_both_backends!(workers_share_the_queue);

/// Two servers on one PostgreSQL database: the second, started while the first trains a run,
/// leaves that run alone (it is the first's lease), and a client of the second follows the run
/// live, every step in order, through to its end.
#[test]
fn a_run_streams_to_a_client_of_another_server() {
    use std::io::{BufRead, BufReader, Write};
    let site = Site::new("two_servers", Backend::Postgres);
    let member = site.token("member");
    let trainer = site.start(&[]);
    let dataset = trainer.upload_fixture(&member);
    let run = trainer.start_run(
        &member,
        &dataset,
        json!({"max_steps": 300, "save_steps": 100, "logging_steps": 1, "pre_seq_len": 4}),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while trainer.get(&format!("/api/v1/runs/{run}"), &member).json()["state"] != "running" {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let other = site.start(&["--max-concurrent-runs", "0"]);
    let mut stream = std::net::TcpStream::connect(&other.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/runs/{run}/events HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {member}\r\nAccept: text/event-stream\r\n\r\n",
        other.address
    )
    .unwrap();
    let mut steps = Vec::new();
    let mut running_at_first_step = None;
    let mut last_state = String::new();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
        match event["kind"].as_str().unwrap() {
            "metrics" => {
                if steps.is_empty() {
                    // Told while the run still trains on the first server: live, not replayed.
                    let now = trainer.get(&format!("/api/v1/runs/{run}"), &member).json();
                    running_at_first_step = Some(now["state"].clone());
                }
                steps.push(event["data"]["step"].as_i64().unwrap());
            }
            "state" => last_state = event["data"]["state"].as_str().unwrap().to_owned(),
            _ => {}
        }
    }
    assert_eq!(running_at_first_step, Some(json!("running")));
    assert_eq!(steps, (1..=300).collect::<Vec<_>>());
    assert_eq!(last_state, "succeeded");
    // Trained once, by the first server, from start to end.
    let ended = other.get(&format!("/api/v1/runs/{run}"), &member).json();
    assert_eq!(ended["attempts"], 1, "{ended}");
}
