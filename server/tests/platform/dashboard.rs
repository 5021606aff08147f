//! The dashboard end to end in headless Chromium (tests/e2e/dashboard.mjs, playwright-core):
//! setup, models, a bad and a good upload, a live run reloaded mid-way, a streamed chat, and base
//! vs tuned side by side. Screenshots land in `target/dashboard-screenshots/`. Needs the built app
//! (`web/build.sh`) and `npm install` in tests/e2e; `./test.sh` does both.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{fixture, json_report, Backend, Site};

#[test]
fn dashboard_walkthrough_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let web_dir = root.join("www");
    assert!(
        web_dir.join("pkg/glmtune_web.js").is_file(),
        "the dashboard is not built: run ./test.sh (it runs web/build.sh)"
    );
    let e2e = root.join("tests/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./test.sh (npm install in tests/e2e)"
    );
    let site = Site::new("dashboard", Backend::Sqlite);
    let web = web_dir.to_string_lossy().into_owned();
    // q4_0 copies of the ChatGLM-6B and ChatGLM3 fixtures for the in-browser chat.
    let quantize = |model: String, out: &Path| {
        let made = Command::new(env!("CARGO_BIN_EXE_glmtune"))
            .args(["quantize", "--model", &model, "--bits", "4", "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    };
    let quantized = site.data_dir.join("tiny-q4");
    quantize(fixture("model"), &quantized);
    let glm3 = site.data_dir.join("glm3-q4");
    let glm3_fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm3-tiny/model");
    quantize(glm3_fixture.to_string_lossy().into_owned(), &glm3);
    let local_model = format!("tiny-q4={}", quantized.display());
    let glm3_model = format!("glm3-q4={}", glm3.display());
    let server = site.start(&[
        "--web-dir",
        &web,
        "--model",
        &local_model,
        "--model",
        &glm3_model,
    ]);
    let token = server.setup_token.clone().expect("a setup token");
    // A training worker registered with its own key, for the Workers page.
    let worker_key = site.token("worker");
    let registered = server.post(
        "/api/v1/workers",
        &worker_key,
        &serde_json::json!({"name": "gpu-box", "devices": [{"device": "cuda:0", "memory_bytes": null}, {"device": "cuda:1", "memory_bytes": null}], "models": [{"name": "tiny", "sha256": "ab12cd34ef56ab12cd34ef56"}]}),
    );
    assert_eq!(registered.status, 200, "{}", registered.text());
    // Every page comes with a policy that allows only this server's scripts, workers and wasm
    // (and no inline script), refuses framing and sniffing; the walk below runs under it.
    let page = server.call("GET", "/", &[], b"");
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("script-src 'self' 'wasm-unsafe-eval'")
            && policy.contains("frame-ancestors 'none'")
            && !policy.contains("script-src 'self' 'unsafe-inline'"),
        "{policy}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(!String::from_utf8_lossy(&page.body).contains("import init"));
    // The app's wasm goes gzipped to browsers that accept it, whole to those that do not.
    let wasm = "/pkg/glmtune_web_bg.wasm";
    let zipped = server.call("GET", wasm, &[("Accept-Encoding", "gzip")], b"");
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    let plain = server.call("GET", wasm, &[], b"");
    assert_eq!(plain.header("content-encoding"), None);
    assert!(zipped.body.len() * 2 < plain.body.len() && plain.body.starts_with(b"\0asm"));
    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let bad = site.data_dir.join("bad.jsonl");
    let mut bytes = std::fs::read(fixture("train.jsonl")).unwrap();
    bytes.extend_from_slice(b"{\"content\": \"x\", \"history\": []}\n");
    std::fs::write(&bad, bytes).unwrap();
    // About 2 MB: long enough on a throttled link for the progress bar to show.
    let big = site.data_dir.join("big.jsonl");
    std::fs::write(
        &big,
        std::fs::read(fixture("train.jsonl")).unwrap().repeat(1500),
    )
    .unwrap();
    let seen = json_report(
        Command::new("node")
            .arg(e2e.join("dashboard.mjs"))
            .env("BASE_URL", format!("http://{}", server.address))
            .env("SETUP_TOKEN", token)
            .env("BAD_FILE", &bad)
            .env("GOOD_FILE", fixture("train.jsonl"))
            .env("BIG_FILE", &big)
            .env("SCREENSHOTS", &screenshots)
            .env("QUANTIZED_DIR", &quantized)
            .env("RUNS_DIR", site.data_dir.join("runs"))
            .env("SERVER_PID", server.child.id().to_string()),
    );
    assert!(seen.get("failure").is_none(), "{seen}");
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert!(
        seen["signed_in"].as_str().unwrap().contains("admin"),
        "{seen}"
    );
    assert!(
        seen["key_secret"].as_str().unwrap().starts_with("glm-"),
        "{seen}"
    );
    // The key made in the walk, and the worker key made above.
    assert_eq!(seen["key_rows"], 2, "{seen}");
    assert!(seen["demo_badge"]
        .as_str()
        .unwrap()
        .contains("random weights"));
    let bad_rows = seen["bad_rows"].as_array().unwrap();
    assert_eq!(bad_rows.len(), 1, "{seen}");
    assert!(
        bad_rows[0].as_str().unwrap().contains("line 9")
            && bad_rows[0].as_str().unwrap().contains("summary"),
        "{seen}"
    );
    assert!(seen["tabs_to_file_picker"].is_u64(), "{seen}");
    assert_eq!(seen["upload_enabled_when_bad"], false, "{seen}");
    // Measured in the browser, before the upload, and again at other limits.
    assert_eq!(seen["stored_before_upload"], 0, "{seen}");
    assert!(
        seen["local_truncation"]
            .as_str()
            .unwrap()
            .starts_with("3 of 8 prompts"),
        "{seen}"
    );
    assert!(
        seen["local_truncation_128"]
            .as_str()
            .unwrap()
            .starts_with("0 of 8 prompts"),
        "{seen}"
    );
    let progress = seen["progress_seen"].as_f64().unwrap();
    assert!(progress > 0.0 && progress < 100.0, "{seen}");
    assert_eq!(
        seen["histograms"],
        serde_json::json!(["Prompt tokens", "Answer tokens"])
    );
    assert!(seen["truncation"] == seen["local_truncation"], "{seen}");
    assert_eq!(seen["preview_rows"], 5);
    let (before, after) = (
        seen["points_before_reload"].as_u64().unwrap(),
        seen["points_after_reload"].as_u64().unwrap(),
    );
    assert!(before >= 20 && after >= before, "{seen}");
    assert_eq!(seen["final_points"], 300, "{seen}");
    // Two runs compared: both curves, both rows, and the settings told apart.
    assert_eq!(seen["compared_rows"], 2, "{seen}");
    assert_eq!(seen["compare_legend"], 2, "{seen}");
    assert_eq!(seen["compare_points"], "330 points", "{seen}");
    let differ = seen["settings_differ"].as_array().unwrap();
    for key in ["learning_rate", "max_steps", "source_prefix"] {
        assert!(differ.iter().any(|k| k == key), "{key}: {seen}");
    }
    // The second run's forgetting guard, charted from its evaluations at steps 10, 20 and 30.
    assert_eq!(seen["forgetting_points"], "3 points", "{seen}");
    assert_eq!(seen["phone_overflow"], serde_json::json!([]), "{seen}");
    // The in-browser chat ran on WebGPU and answered as the server does; after a reload, from the
    // browser's cache, with the conversation kept in IndexedDB, the same again.
    let (first, again) = (&seen["local_first"], &seen["local_after_reload"]);
    assert!(
        first["backend"].as_str().unwrap().starts_with("WebGPU"),
        "{seen}"
    );
    assert!(!first["answer"].as_str().unwrap().is_empty(), "{seen}");
    assert_eq!(again["answer"], first["answer"], "{seen}");
    // The same greedy answer as the server gives for that model on the CPU.
    assert_eq!(first["answer"], seen["served_base"], "{seen}");
    // The reload downloaded nothing; with one piece gone from the cache, only that one.
    assert_eq!(first["source"], "network", "{seen}");
    assert_eq!(again["source"], "cache", "{seen}");
    let pieces = seen["local_pieces"].as_u64().unwrap();
    assert!(pieces >= 2, "{seen}");
    assert!(
        again["status"].as_str().unwrap().contains(&format!(
            "0 pieces downloaded, {pieces} from this browser's cache"
        )),
        "{seen}"
    );
    let resumed = &seen["local_resumed"];
    assert!(
        resumed["status"].as_str().unwrap().contains(&format!(
            "1 pieces downloaded, {} from this browser's cache",
            pieces - 1
        )),
        "{seen}"
    );
    assert_eq!(resumed["answer"], first["answer"], "{seen}");
    // With a run's adapter: the answer the server gives for the same quantized base and adapter.
    assert_eq!(seen["registered_tuned"], 201, "{seen}");
    assert_eq!(
        seen["local_with_adapter"]["answer"], seen["served_tuned"],
        "{seen}"
    );
    // A quantized ChatGLM3 checkpoint answers in the browser as the server answers for it.
    let glm3 = &seen["local_glm3"];
    assert_eq!(glm3["backend"], first["backend"], "{seen}");
    assert!(!seen["served_glm3"].as_str().unwrap().is_empty(), "{seen}");
    assert_eq!(glm3["answer"], seen["served_glm3"], "{seen}");
    // Each conversation came back from IndexedDB: one per model and adapter.
    let kept: Vec<_> = [
        first,
        again,
        resumed,
        &seen["local_with_adapter"],
        &seen["local_offline"],
    ]
    .iter()
    .map(|s| s["kept"].as_u64().unwrap())
    .collect();
    // (Each step cleared the turns it found before asking.)
    assert_eq!(kept, [0, 1, 1, 0, 1], "{seen}");
    // Without WebGPU, candle in wasm: the server's answer again.
    let cpu = &seen["local_cpu"];
    assert!(
        cpu["backend"].as_str().unwrap().starts_with("CPU"),
        "{seen}"
    );
    assert_eq!(cpu["answer"], seen["served_base"], "{seen}");
    // With the server stopped, the app, model and adapter came from this browser.
    let offline = &seen["local_offline"];
    assert_eq!(offline["source"], "cache", "{seen}");
    assert_eq!(offline["answer"], seen["served_tuned"], "{seen}");
    assert!(
        seen["medical_system"].as_str().unwrap().contains("医生"),
        "{seen}"
    );
    assert_eq!(seen["medical_target_placeholder"], "256", "{seen}");
    // The run's source prefix is the tuned model's system prompt in chats.
    assert_eq!(seen["chat_system"], "你是医生。", "{seen}");
    assert_eq!(seen["conversation_system"], "System: 你是医生。", "{seen}");
    assert!(!seen["chat_answer"].as_str().unwrap().is_empty(), "{seen}");
    // The uploaded dataset augmented from its page: a version naming its parent, its new
    // prompts beside their parents'.
    assert!(seen["augmented_rows"].as_u64().unwrap_or(0) > 0, "{seen}");
    // The Workers page lists the registered worker; runs trained here say so.
    assert_eq!(
        seen["worker_row"], "gpu-box\tcuda:0, cuda:1\ttiny (ab12cd34ef56…)\tidle\t",
        "{seen}"
    );
    assert_eq!(seen["trained_on"], "this server", "{seen}");
    assert!(seen["preview_examples"].as_u64().unwrap_or(0) > 0, "{seen}");
    assert!(
        seen["version_of"]
            .as_str()
            .unwrap_or_default()
            .contains("augmented from train.jsonl"),
        "{seen}"
    );
    // This server as a teacher of itself, its key sealed (the list says so and shows no key),
    // and a version of the dataset made of its answers.
    let teacher = seen["teacher_row"].as_str().unwrap_or_default();
    assert!(teacher.contains("sealed"), "{seen}");
    assert!(
        !teacher.contains(seen["key_secret"].as_str().unwrap_or("?")),
        "{seen}"
    );
    assert!(
        seen["taught_version"]
            .as_str()
            .unwrap_or_default()
            .contains("answer by this server from train.jsonl"),
        "{seen}"
    );
    // Before it, a preview of reworded prompts: the task's own question shown to edit, at most
    // 5 new records listed.
    assert!(
        seen["paraphrase_template"]
            .as_str()
            .unwrap_or_default()
            .contains("{prompt}"),
        "{seen}"
    );
    let previewed = seen["teach_preview_rows"].as_u64().unwrap_or(0);
    assert!((1..=5).contains(&previewed), "{seen}");
    // Under its parent in the list; its 8 new answers beside the parent's, each changed.
    assert_eq!(seen["taught_row_class"], "version", "{seen}");
    assert_eq!(seen["taught_diff_rows"], 8, "{seen}");
    assert_eq!(seen["taught_diff_changed"], 8, "{seen}");
    // A version's page opens with a fresh form: the task shown is the one its template is for.
    assert_eq!(
        (&seen["task_after_made"], &seen["template_after_made"]),
        (&serde_json::json!("answer"), &serde_json::json!("{prompt}")),
        "{seen}"
    );
    // Questions about a document picked in the form: a version, with the job's token count.
    assert!(
        seen["questions_version"]
            .as_str()
            .unwrap_or_default()
            .contains("questions by this server from train.jsonl"),
        "{seen}"
    );
    assert!(
        seen["questions_status"]
            .as_str()
            .unwrap_or_default()
            .contains("completion tokens"),
        "{seen}"
    );
    // The sweep from its form: 4 trials, 2 stopped at the rung, one plot a swept setting (each
    // trial a point), and the best (rank 1) promoted.
    assert_eq!(
        (seen["sweep_rows"].clone(), seen["sweep_stopped"].clone()),
        (serde_json::json!(4), serde_json::json!(2)),
        "{seen}"
    );
    assert_eq!(
        seen["sweep_plots"],
        serde_json::json!([
            "learning_rate vs eval_loss: 4 points",
            "pre_seq_len vs eval_loss: 4 points"
        ]),
        "{seen}"
    );
    assert_eq!(seen["sweep_promoted_row"], "1", "{seen}");
    // A run distilled from the first run, picked as its teacher in the form.
    let note = seen["distilled_note"].as_str().unwrap_or_default();
    assert!(
        note.contains("distilling from") && note.contains("ftjob-"),
        "{seen}"
    );
    let compared = seen["compare"].as_array().unwrap();
    assert!(
        compared.iter().any(|c| c == "tiny")
            && compared
                .iter()
                .any(|c| c.as_str().unwrap().starts_with("ft:tiny:")),
        "{seen}"
    );
    for name in [
        "1-setup",
        "4-checked-in-browser",
        "4-dataset",
        "4-upload-progress",
        "6-run-done",
        "6-compare-runs",
        "8-compare",
        "8-in-browser",
        "8-in-browser-adapter",
        "8-in-browser-cpu",
        "10-offline",
        "9-phone-run",
        "9-phone-run-dark",
    ] {
        assert!(screenshots.join(format!("{name}.png")).is_file(), "{name}");
    }
}
