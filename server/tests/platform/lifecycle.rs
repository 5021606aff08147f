//! A dataset from upload to a fine-tuned model: validation, split, a run with its live events,
//! checkpoints, evaluation, the adapter zip, chats and the OpenAI chat over the result.

use std::io::Read;

use serde_json::json;

use crate::harness::{fixture, Backend, Site};
use crate::on_both_backends;

fn lifecycle(backend: Backend) {
    let site = Site::new("lifecycle", backend);
    let key = site.token("member");
    let server = site.start(&[]);
    let train = std::fs::read(fixture("train.jsonl")).unwrap();

    // Bad uploads: every bad line is listed, nothing is stored.
    let mut bad = train.clone();
    bad.extend_from_slice(b"{\"content\": \"x\", \"history\": []}\nnot json\n");
    let response = server.upload("name=bad.jsonl", &key, &bad);
    assert_eq!(response.status, 400, "{}", response.text());
    let error = response.json();
    let listed = error["error"]["details"]["invalid_records"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), 2, "{error}");
    assert_eq!(
        (listed[0]["line"].clone(), listed[0]["field"].clone()),
        (json!(9), json!("summary"))
    );
    assert_eq!(listed[1]["line"], 10);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bad.jsonl"));
    assert!(!error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/tmp/"));
    let empty = server.upload("name=empty.jsonl", &key, b"\n\n");
    assert_eq!(empty.status, 400, "{}", empty.text());
    let unknown = server.upload("name=x.jsonl&format=csv", &key, &train);
    assert_eq!(unknown.status, 400);
    assert_eq!(
        server.get("/api/v1/datasets", &key).json()["data"],
        json!([])
    );
    let leftovers: Vec<_> = std::fs::read_dir(site.data_dir.join("tmp"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // A good upload, measured against the model's tokenizer; the same bytes twice share a blob.
    let uploaded = server.upload(
        "name=train.jsonl&model=tiny&max_source_length=32",
        &key,
        &train,
    );
    assert_eq!(uploaded.status, 201, "{}", uploaded.text());
    let dataset = uploaded.json();
    assert_eq!(
        (dataset["records"].clone(), dataset["format"].clone()),
        (json!(8), json!("columns"))
    );
    assert_eq!(dataset["stats"]["prompt_tokens"]["count"], 8);
    // Three prompts are longer than 31 tokens (the fixture's own inspection: 26 to 81 tokens).
    assert_eq!(dataset["stats"]["max_source_length"], 32);
    assert_eq!(dataset["stats"]["prompt_truncation"]["count"], 3);
    assert_eq!(dataset["preview"].as_array().unwrap().len(), 5);
    // The stored statistics are the engine's own type, which the dashboard reads and computes.
    let stats: glmtune_engine::data::TokenStats =
        serde_json::from_value(dataset["stats"].clone()).unwrap();
    assert_eq!(stats.prompt_truncation.count, 3);

    // The model's files, for the browser's tokenizer: listed, whole, by range, nothing outside.
    let files = server.get("/api/v1/models/tiny/files", &key).json();
    let names: Vec<&str> = files["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"ice_text.model") && names.contains(&"config.json"),
        "{names:?}"
    );
    let vocabulary = std::fs::read(fixture("model/ice_text.model")).unwrap();
    let whole = server.get("/api/v1/models/tiny/files/ice_text.model", &key);
    assert_eq!((whole.status, whole.body.len()), (200, vocabulary.len()));
    assert_eq!(whole.body, vocabulary);
    let auth = format!("Bearer {key}");
    let part = server.call(
        "GET",
        "/api/v1/models/tiny/files/ice_text.model",
        &[("Authorization", &auth), ("Range", "bytes=10-19")],
        b"",
    );
    assert_eq!(
        (part.status, part.body.as_slice()),
        (206, &vocabulary[10..20])
    );
    for outside in ["..%2Fconfig.json", "%2E%2E", "absent.bin"] {
        let refused = server.get(&format!("/api/v1/models/tiny/files/{outside}"), &key);
        assert_eq!(refused.status, 404, "{outside}: {}", refused.text());
    }
    assert_eq!(server.get("/api/v1/models/nope/files", &key).status, 404);
    let again = server.upload("name=copy.jsonl", &key, &train).json();
    assert_eq!(again["sha256"], dataset["sha256"]);
    assert_ne!(again["id"], dataset["id"]);
    let content = server.get(
        &format!(
            "/api/v1/datasets/{}/content",
            dataset["id"].as_str().unwrap()
        ),
        &key,
    );
    assert_eq!(content.body, train);

    let split = server.post(
        &format!("/api/v1/datasets/{}/split", dataset["id"].as_str().unwrap()),
        &key,
        &json!({"validation_fraction": 0.25, "seed": 7}),
    );
    assert_eq!(split.status, 201, "{}", split.text());
    let split = split.json();
    assert_eq!(
        (
            split["train"]["records"].clone(),
            split["validation"]["records"].clone()
        ),
        (json!(6), json!(2))
    );

    // Early stopping, the best checkpoint and the forgetting guard act at evaluations: refused
    // without them.
    for setting in [
        json!({"early_stopping_patience": 2}),
        json!({"load_best_model_at_end": true}),
        json!({"forgetting_guard": true}),
    ] {
        let refused = server.post(
            "/api/v1/runs",
            &key,
            &json!({"model": "tiny", "train_dataset": split["train"]["id"], "settings": setting}),
        );
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert!(
            refused.text().contains("needs a validation_dataset"),
            "{}",
            refused.text()
        );
    }

    // A run with validation: queued → running → succeeded, streamed live.
    let created = server.post(
        "/api/v1/runs",
        &key,
        &json!({
            "model": "tiny",
            "train_dataset": split["train"]["id"],
            "validation_dataset": split["validation"]["id"],
            "preset": "quick",
            "settings": {"max_steps": 6, "save_steps": 2, "eval_steps": 3, "eval_samples": 2, "pre_seq_len": 4, "source_prefix": "你是医生。"}
        }),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let run_id = created.json()["id"].as_str().unwrap().to_owned();
    let stream = server.get(&format!("/api/v1/runs/{run_id}/events"), &key);
    assert_eq!(stream.status, 200);
    assert!(stream
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = stream.events();
    let ids: Vec<i64> = events.iter().map(|e| e.0.unwrap()).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "ids count up from 1"
    );
    let states: Vec<String> = events
        .iter()
        .filter(|e| e.1 == "state")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.2).unwrap()["data"]["state"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(states, ["queued", "running", "succeeded"]);
    let steps: Vec<i64> = events
        .iter()
        .filter(|e| e.1 == "metrics")
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.2).unwrap()["data"].clone())
        .filter(|d| d.get("loss").is_some())
        .map(|d| d["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    assert!(events
        .iter()
        .any(|e| e.1 == "metrics" && e.2.contains("eval_loss")));

    // Reconnecting with Last-Event-ID replays exactly what came after.
    let from = ids[ids.len() / 2];
    let auth = format!("Bearer {key}");
    let replay = server.call(
        "GET",
        &format!("/api/v1/runs/{run_id}/events"),
        &[
            ("Authorization", &auth),
            ("Last-Event-ID", &from.to_string()),
        ],
        b"",
    );
    let replayed: Vec<i64> = replay.events().iter().map(|e| e.0.unwrap()).collect();
    assert_eq!(replayed, ids[ids.len() / 2 + 1..].to_vec());

    let run = server.get(&format!("/api/v1/runs/{run_id}"), &key).json();
    assert_eq!(run["state"], "succeeded");
    assert_eq!(
        (run["step"].clone(), run["attempts"].clone()),
        (json!(6), json!(1))
    );
    let fine_tuned = run["fine_tuned_model"].as_str().unwrap().to_owned();
    assert_eq!(fine_tuned, format!("ft:tiny:{run_id}"));
    assert_eq!(server.checkpoint_steps(&run_id, &key), [2, 4, 6]);
    // Each checkpoint with the losses logged up to it (evaluation every 3 steps).
    let checkpoints = server
        .get(&format!("/api/v1/runs/{run_id}/checkpoints"), &key)
        .json();
    let evaluated: Vec<_> = checkpoints["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["eval_step"].clone(),
                c["loss"].is_f64(),
                c["eval_loss"].is_f64(),
            )
        })
        .collect();
    assert_eq!(
        evaluated,
        [
            (json!(null), true, false),
            (json!(3), true, true),
            (json!(6), true, true)
        ]
    );
    let evaluation = server
        .get(&format!("/api/v1/runs/{run_id}/evaluation"), &key)
        .json();
    assert!(evaluation["scores"]["rouge-l"].is_number(), "{evaluation}");
    assert_eq!(evaluation["samples"].as_array().unwrap().len(), 2);
    // The worst answers first, each with its prompt and scores.
    let ranks: Vec<f64> = evaluation["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["prompt"].is_string(), "{s}");
            s["scores"]["rouge-l"].as_f64().unwrap()
        })
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    assert!(
        evaluation["scores"]["exact-match"].is_number(),
        "{evaluation}"
    );
    assert!(server
        .get(&format!("/api/v1/runs/{run_id}/logs"), &key)
        .text()
        .contains("adapter written"));
    let cancel_done = server.post(&format!("/api/v1/runs/{run_id}/cancel"), &key, &json!({}));
    assert_eq!(cancel_done.status, 409);

    // The adapter zip holds the official files, as the run wrote them.
    let zip = server.get(&format!("/api/v1/runs/{run_id}/adapter"), &key);
    assert_eq!(zip.status, 200);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.body)).unwrap();
    let mut weights = Vec::new();
    archive
        .by_name("pytorch_model.bin")
        .unwrap()
        .read_to_end(&mut weights)
        .unwrap();
    let run_dir = site.data_dir.join("runs").join(&run_id);
    assert_eq!(
        weights,
        std::fs::read(run_dir.join("pytorch_model.bin")).unwrap()
    );
    assert!(archive.by_name("config.json").is_ok());
    // And file by file, for the in-browser chat; nothing outside the adapter's files.
    let safetensors = server.get(
        &format!("/api/v1/runs/{run_id}/adapter/adapter.safetensors"),
        &key,
    );
    assert_eq!(safetensors.status, 200);
    assert_eq!(
        safetensors.body,
        std::fs::read(run_dir.join("adapter.safetensors")).unwrap()
    );
    for other in ["events.jsonl", "..%2Fconfig.json", "checkpoint-2"] {
        let refused = server.get(&format!("/api/v1/runs/{run_id}/adapter/{other}"), &key);
        assert_eq!(refused.status, 404, "{other}");
    }

    // The fine-tuned model answers in chats (kept) and in chat completions.
    let models = server.get("/v1/models", &key).json();
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == fine_tuned.as_str()));
    let chat = server.post(
        "/api/v1/chats",
        &key,
        &json!({"model": "tiny", "run_id": run_id}),
    );
    assert_eq!(chat.status, 201, "{}", chat.text());
    let chat_id = chat.json()["id"].as_str().unwrap().to_owned();
    let answer = server.post(
        &format!("/api/v1/chats/{chat_id}/messages"),
        &key,
        &json!({"content": "你好", "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let streamed = server.post(
        &format!("/api/v1/chats/{chat_id}/messages"),
        &key,
        &json!({"content": "再见", "max_tokens": 5, "temperature": 0, "stream": true}),
    );
    let events = streamed.events();
    assert_eq!(events.last().unwrap().1, "done", "{}", streamed.text());
    let deltas: String = events
        .iter()
        .filter(|e| e.1 == "delta")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.2).unwrap()["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let done: serde_json::Value = serde_json::from_str(&events.last().unwrap().2).unwrap();
    assert_eq!(deltas, done["content"].as_str().unwrap());
    let kept = server.get(&format!("/api/v1/chats/{chat_id}"), &key).json();
    let roles: Vec<&str> = kept["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(kept["messages"][1]["content"], answer.json()["content"]);

    let completion = server.post(
        "/v1/chat/completions",
        &key,
        &json!({"model": fine_tuned, "messages": [{"role": "user", "content": "你好"}], "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(completion.status, 200, "{}", completion.text());
    // Same adapter, same greedy answer as the chat's first turn.
    assert_eq!(
        completion.json()["choices"][0]["message"]["content"],
        kept["messages"][1]["content"]
    );
    // The run's source prefix is the adapter's default system prompt; another one replaces it.
    let ask = |system: Option<&str>| {
        let mut messages = vec![json!({"role": "user", "content": "你好"})];
        if let Some(system) = system {
            messages.insert(0, json!({"role": "system", "content": system}));
        }
        let response = server.post(
            "/v1/chat/completions",
            &key,
            &json!({"model": fine_tuned, "messages": messages, "max_tokens": 5, "temperature": 0}),
        );
        assert_eq!(response.status, 200, "{}", response.text());
        response.json()["choices"][0]["message"]["content"].clone()
    };
    assert_eq!(ask(Some("你是医生。")), kept["messages"][1]["content"]);
    let plain_chat = server
        .post(
            "/api/v1/chats",
            &key,
            &json!({"model": "tiny", "run_id": run_id, "system": ""}),
        )
        .json();
    assert_eq!(plain_chat["system"], "");
    let plain = server.post(
        &format!(
            "/api/v1/chats/{}/messages",
            plain_chat["id"].as_str().unwrap()
        ),
        &key,
        &json!({"content": "你好", "max_tokens": 5, "temperature": 0}),
    );
    assert_eq!(plain.json()["content"], ask(Some("")));
    let missing = server.post(
        "/v1/chat/completions",
        &key,
        &json!({"model": "ft:tiny:ftjob-000", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(missing.status, 404);

    let metrics = server.get("/metrics", &key).text();
    assert!(
        metrics.contains("glmtune_runs{state=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("glmtune_queue_depth 0"));

    // Runs keep their data: a used dataset is not deleted.
    let delete = server.call(
        "DELETE",
        &format!(
            "/api/v1/datasets/{}",
            split["train"]["id"].as_str().unwrap()
        ),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(delete.status, 409);
}
on_both_backends!(lifecycle);

fn cancel_and_resume(backend: Backend) {
    let site = Site::new("cancel", backend);
    let key = site.token("member");
    let server = site.start(&[]);
    let dataset = server.upload_fixture(&key);
    let settings = json!({"max_steps": 100000, "save_steps": 5, "pre_seq_len": 4});
    let id = &server.start_run(&key, &dataset, settings);
    // Wait until it trains.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while server.get(&format!("/api/v1/runs/{id}"), &key).json()["step"]
        .as_i64()
        .unwrap()
        < 6
    {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Another member may see the run but not stop it.
    let stranger = site.token("member");
    let refused = server.post(&format!("/api/v1/runs/{id}/cancel"), &stranger, &json!({}));
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(
        server.get(&format!("/api/v1/runs/{id}"), &stranger).json()["state"],
        "running"
    );
    let cancelled = server.post(&format!("/api/v1/runs/{id}/cancel"), &key, &json!({}));
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["state"], "cancelled");
    let resumed = server.post(&format!("/api/v1/runs/{id}/resume"), &key, &json!({}));
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let run = server.get(&format!("/api/v1/runs/{id}"), &key).json();
        if run["attempts"] == 2 && run["state"] == "running" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{run}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = server.get(&format!("/api/v1/runs/{id}/logs"), &key).text();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut log = log;
    while !log.contains("resuming from") {
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = server.get(&format!("/api/v1/runs/{id}/logs"), &key).text();
    }
    let cancelled = server.post(&format!("/api/v1/runs/{id}/cancel"), &key, &json!({}));
    assert_eq!(cancelled.json()["state"], "cancelled");
    // The OpenAI view of the same job.
    let job = server
        .get(&format!("/v1/fine_tuning/jobs/{id}"), &key)
        .json();
    assert_eq!(
        (job["object"].clone(), job["status"].clone()),
        (json!("fine_tuning.job"), json!("cancelled"))
    );
}
on_both_backends!(cancel_and_resume);
