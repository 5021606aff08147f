//! Bad uploads get a JSON error naming what is wrong and leave nothing behind; other layouts are
//! detected; `/v1/files` takes OpenAI's multipart form.

use serde_json::json;

use crate::harness::{files_under, fixture, Backend, Server, Site};

fn multipart(
    server: &Server,
    key: &str,
    fields: &[(&str, Option<&str>, &[u8])],
) -> crate::harness::Response {
    let boundary = "glmtune-test-boundary";
    let mut body = Vec::new();
    for (name, filename, bytes) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(filename) = filename {
            body.extend_from_slice(
                format!("; filename=\"{filename}\"\r\nContent-Type: application/octet-stream")
                    .as_bytes(),
            );
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let auth = format!("Bearer {key}");
    let content_type = format!("multipart/form-data; boundary={boundary}");
    server.call(
        "POST",
        "/v1/files",
        &[("Authorization", &auth), ("Content-Type", &content_type)],
        &body,
    )
}

fn nothing_left(site: &Site, server: &Server, key: &str) {
    assert_eq!(
        server.get("/api/v1/datasets", key).json()["data"],
        json!([])
    );
    let temporary: Vec<_> = std::fs::read_dir(site.data_dir.join("tmp"))
        .unwrap()
        .collect();
    assert!(temporary.is_empty(), "{temporary:?}");
    let blobs = files_under(&site.data_dir.join("blobs"));
    assert!(blobs.is_empty(), "{blobs:?}");
}

#[test]
fn bad_uploads_are_refused_whole() {
    let site = Site::new("uploads", Backend::Sqlite);
    let key = site.token("member");
    let server = site.start(&["--max-upload-bytes", "1000"]);
    let train = std::fs::read(fixture("train.jsonl")).unwrap();
    assert!(train.len() > 1000);

    let too_big = server.upload("name=big.jsonl", &key, &train);
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    assert_eq!(too_big.json()["error"]["code"], "payload_too_large");
    nothing_left(&site, &server, &key);

    let broken = server.upload(
        "name=broken.json",
        &key,
        b"[{\"prompt\": \"a\", \"response\": \"b\"},",
    );
    assert_eq!(broken.status, 400);
    assert!(
        broken.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("broken.json"),
        "{}",
        broken.text()
    );
    let undetectable = server.upload(
        "name=odd.jsonl",
        &key,
        b"{\"question\": \"a\", \"answer\": \"b\"}\n",
    );
    assert_eq!(undetectable.status, 400);
    assert!(
        undetectable
            .text()
            .contains("cannot detect the dataset format"),
        "{}",
        undetectable.text()
    );
    let columns = server.upload(
        "name=odd.jsonl&prompt_column=question&response_column=answer",
        &key,
        b"{\"question\": \"a\", \"answer\": \"b\"}\n",
    );
    assert_eq!(columns.status, 201, "{}", columns.text());
    let id = columns.json()["id"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {key}");
    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/api/v1/datasets/{id}"),
                &[("Authorization", &auth)],
                b""
            )
            .status,
        204
    );
    nothing_left(&site, &server, &key);

    let wrong_purpose = multipart(
        &server,
        &key,
        &[
            ("purpose", None, b"assistants"),
            ("file", Some("a.jsonl"), b"{}"),
        ],
    );
    assert_eq!(wrong_purpose.status, 400);
    assert!(wrong_purpose.text().contains("purpose"));
    let no_file = multipart(&server, &key, &[("purpose", None, b"fine-tune")]);
    assert_eq!(no_file.status, 400);
    assert!(no_file.text().contains("file"));
    nothing_left(&site, &server, &key);

    // OpenAI's chat format and Alpaca as a JSON array are detected.
    let chat = b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n";
    let file = multipart(
        &server,
        &key,
        &[
            ("purpose", None, b"fine-tune"),
            ("file", Some("chat.jsonl"), chat),
        ],
    );
    assert_eq!(file.status, 200, "{}", file.text());
    let file = file.json();
    assert_eq!(
        (
            file["object"].clone(),
            file["filename"].clone(),
            file["status"].clone()
        ),
        (json!("file"), json!("chat.jsonl"), json!("processed"))
    );
    let dataset = server
        .get(
            &format!("/api/v1/datasets/{}", file["id"].as_str().unwrap()),
            &key,
        )
        .json();
    assert_eq!(dataset["format"], "messages");
    let alpaca = br#"[{"instruction": "add", "input": "1 1", "output": "2"}]"#;
    let uploaded = server.upload("name=alpaca.json", &key, alpaca);
    assert_eq!(uploaded.json()["format"], "alpaca");
    let listed = server.get("/v1/files", &key).json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
}

#[test]
fn a_run_without_steps_gets_a_stall_event() {
    let site = Site::new("stall", Backend::Sqlite);
    let key = site.token("member");
    let server = site.start(&["--stall-seconds", "1"]);
    let dataset = server.upload_fixture(&key);
    let id = server.start_run(
        &key,
        &dataset,
        json!({"max_steps": 100000, "pre_seq_len": 4}),
    );
    // Wait for the trainer, then freeze it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let trainer = loop {
        let children = children_of(server.child.id());
        if let (Some(pid), true) = (
            children.first(),
            server.get(&format!("/api/v1/runs/{id}"), &key).json()["step"]
                .as_i64()
                .unwrap()
                > 0,
        ) {
            break *pid;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let signal = |name: &str| {
        assert!(std::process::Command::new("kill")
            .args([&format!("-{name}"), &trainer.to_string()])
            .status()
            .unwrap()
            .success());
    };
    signal("STOP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let stall = loop {
        let events = server
            .get(&format!("/api/v1/runs/{id}/events.json"), &key)
            .json();
        if let Some(stall) = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "stall")
        {
            break stall.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no stall event");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    signal("CONT");
    assert!(
        stall["message"]
            .as_str()
            .unwrap()
            .starts_with("no training step for"),
        "{stall}"
    );
    let cancelled = server.post(&format!("/api/v1/runs/{id}/cancel"), &key, &json!({}));
    assert_eq!(cancelled.json()["state"], "cancelled");
}

/// Child processes of `pid` (Linux).
fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    found
}
