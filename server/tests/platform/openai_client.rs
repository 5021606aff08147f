//! The official `openai` Python package against `glmtune serve`: files, a fine-tuning job on the
//! tiny model, and chat completions with its `fine_tuned_model` (see tests/openai_client.py).
//! `GLMTUNE_TEST_PYTHON` names a Python with `openai` installed; `./test.sh` makes one.

use std::process::Command;

use crate::harness::{fixture, json_report, Backend, Site};
use crate::on_both_backends;

fn openai_package(backend: Backend) {
    let python = std::env::var("GLMTUNE_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("GLMTUNE_TEST_PYTHON is not set: run the tests with ./test.sh, which installs the openai package")
    });
    let site = Site::new("openai", backend);
    let key = site.token("member");
    let server = site.start(&[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/openai_client.py");
    let seen = json_report(
        Command::new(python)
            .arg(script)
            .env("OPENAI_BASE_URL", format!("http://{}/v1", server.address))
            .env("OPENAI_API_KEY", &key)
            .env("TRAIN_FILE", fixture("train.jsonl")),
    );
    let job = seen["job"].as_str().unwrap();
    assert_eq!(seen["fine_tuned_model"], format!("ft:tiny:{job}"));
    assert_eq!(seen["jobs"], serde_json::json!([job]));
    // 8 records, batch 2, 2 epochs: 8 steps, checkpoints from the quick preset every 10 and at the end.
    assert!(seen["events"].as_u64().unwrap() >= 8 + 3, "{seen}");
    assert_eq!(seen["missing_status"], 404);
    assert_eq!(seen["finish_reason"], "length");
    // Streaming and not give the same greedy answer, and the server's own chat agrees.
    assert_eq!(seen["answer"], seen["streamed"]);
    // max_completion_tokens is max_tokens by its newer name; a penalty is refused by name.
    assert_eq!(seen["max_completion_tokens_answer"], seen["answer"]);
    assert_eq!(seen["penalty_refused"][0], 400, "{seen}");
    assert!(
        seen["penalty_refused"][1]
            .as_str()
            .unwrap()
            .contains("presence_penalty"),
        "{seen}"
    );
    let direct = server.post(
        "/api/v1/chats",
        &key,
        &serde_json::json!({"model": "tiny", "run_id": job}),
    );
    let chat = direct.json()["id"].as_str().unwrap().to_owned();
    let reply = server.post(
        &format!("/api/v1/chats/{chat}/messages"),
        &key,
        &serde_json::json!({"content": "你好", "max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(reply.json()["content"], seen["answer"]);
}
on_both_backends!(openai_package);
