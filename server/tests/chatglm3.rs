//! The `glmtune` commands on a ChatGLM3 checkpoint (the tiny fixture made by THUDM's code): chat
//! prompts with history, greedy ids with and without the adapter, quantized on wgpu as on the CPU,
//! and training on conversations.

use std::path::{Path, PathBuf};

mod common;
use common::{glmtune, stdout_json};

fn fixture(path: &str) -> String {
    common::fixture_of(common::CHATGLM3, path)
}

fn expected() -> serde_json::Value {
    common::expected_of(common::CHATGLM3)
}

fn scratch(name: &str) -> PathBuf {
    common::scratch("glm3", name)
}

/// `glmtune generate --chat` for a fixture case: its query with its history.
fn chat(model: &str, case: &serde_json::Value, extra: &[&str]) -> serde_json::Value {
    let history = case["history"].to_string();
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--chat",
        "--prompt",
        case["query"].as_str().unwrap(),
        "--history",
        &history,
        "--max-new-tokens",
        "10",
        "--greedy",
        "--json",
    ];
    args.extend(extra);
    stdout_json(&glmtune(&args))
}

#[test]
fn chat_generation_matches_the_reference_ids() {
    let model = fixture("model");
    let adapter = fixture("adapter_init");
    for case in expected()["chat_cases"].as_array().unwrap() {
        let base = chat(&model, case, &[]);
        assert_eq!(base["ids"], case["greedy_base"], "{}", case["query"]);
        let tuned = chat(&model, case, &["--adapter", &adapter]);
        assert_eq!(tuned["ids"], case["greedy_ptuned"], "{}", case["query"]);
    }
    // A history that is not a list of messages is refused with the flag's name.
    let refused = glmtune(&[
        "generate",
        "--model",
        &model,
        "--chat",
        "--prompt",
        "hi",
        "--history",
        "[1]",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--history"));
}

#[test]
fn quantized_chatglm3_answers_alike_on_wgpu_and_cpu() {
    let out = scratch("q4");
    let quantized = glmtune(&[
        "quantize",
        "--model",
        &fixture("model"),
        "--bits",
        "4",
        "--out",
        &out.to_string_lossy(),
    ]);
    assert!(
        quantized.status.success(),
        "{}",
        String::from_utf8_lossy(&quantized.stderr)
    );
    let model = out.to_string_lossy().into_owned();
    for case in expected()["chat_cases"].as_array().unwrap() {
        let cpu = chat(&model, case, &[]);
        let gpu = chat(&model, case, &["--backend", "wgpu"]);
        assert_eq!(gpu["ids"], cpu["ids"], "{}", case["query"]);
        let tuned_cpu = chat(&model, case, &["--adapter", &fixture("adapter_init")]);
        let tuned_gpu = chat(
            &model,
            case,
            &["--adapter", &fixture("adapter_init"), "--backend", "wgpu"],
        );
        assert_eq!(tuned_gpu["ids"], tuned_cpu["ids"], "{}", case["query"]);
    }
    std::fs::remove_dir_all(&out).unwrap();
}

const CONVERSATIONS: &str = r#"{"conversations":[{"role":"system","content":"你是医生"},{"role":"user","content":"头痛怎么办？"},{"role":"assistant","content":"多休息，多喝水。"}]}
{"conversations":[{"role":"user","content":"感冒怎么办？"},{"role":"assistant","content":"多喝水。"},{"role":"user","content":"发烧呢？"},{"role":"assistant","content":"多休息，注意体温。"}]}
{"messages":[{"role":"user","content":"失眠怎么办？"},{"role":"assistant","content":"注意休息。"}]}
{"messages":[{"role":"user","content":"咳嗽怎么办？"},{"role":"assistant","content":"多喝水，多休息。"}]}
"#;

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("trainer_log.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|row| row["loss"].as_f64())
        .collect()
}

#[test]
fn training_on_conversations_learns_and_the_adapter_chats() {
    let dir = scratch("train");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("conversations.jsonl");
    std::fs::write(&data, CONVERSATIONS).unwrap();
    let output = dir.join("run");
    let trained = glmtune(&[
        "train",
        "--model",
        &fixture("model"),
        "--train-file",
        &data.to_string_lossy(),
        "--pre-seq-len",
        "4",
        "--prefix-dropout",
        "0",
        "--logging-steps",
        "1",
        "--max-source-length",
        "64",
        "--max-target-length",
        "32",
        "--per-device-train-batch-size",
        "4",
        "--learning-rate",
        "0.3",
        "--max-steps",
        "30",
        "--output-dir",
        &output.to_string_lossy(),
    ]);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let losses = losses(&output);
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < first / 2.0, "loss {first} → {last}");
    // The adapter, in the official layout, chats.
    let case = &expected()["chat_cases"][0];
    let answer = chat(
        &fixture("model"),
        case,
        &["--adapter", &output.to_string_lossy()],
    );
    assert!(answer["ids"].as_array().is_some_and(|ids| !ids.is_empty()));
    // Evaluation generates each conversation's last answer from the turns before it.
    let predictions = dir.join("eval");
    let evaluated = glmtune(&[
        "eval",
        "--model",
        &fixture("model"),
        "--adapter",
        &output.to_string_lossy(),
        "--validation-file",
        &data.to_string_lossy(),
        "--greedy",
        "--output-dir",
        &predictions.to_string_lossy(),
    ]);
    let scores = stdout_json(&evaluated);
    assert!(scores["rouge-l"].as_f64().is_some(), "{scores}");
    let rows = std::fs::read_to_string(predictions.join("generated_predictions.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 4);
    assert!(rows.contains("\"labels\":\"多喝水，多休息。\""), "{rows}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `glmtune train` on the conversations of THUDM's ChatGLM3 reference run
/// (`tests/fixtures/training_chatglm3/`: finetune_hf.py's preprocessing and 4.40 Trainer) with its
/// settings, and no `--optim`: the generation's own default (`adamw_torch`) reproduces it, loss by
/// loss, gradient norm by gradient norm, and the trained prefix.
#[test]
fn cli_training_reproduces_finetune_hf() {
    let reference_dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/training_chatglm3");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference_dir.join("expected.json")).unwrap(),
    )
    .unwrap();
    let dir = scratch("finetune-hf");
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("conversations.jsonl");
    let lines: Vec<String> = reference["preprocess"]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| serde_json::json!({ "conversations": c }).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let args = &reference["training_args"];
    let text = |key: &str| args[key].to_string();
    let out = dir.join("out");
    let output = glmtune(&[
        "train",
        "--model",
        &fixture("model"),
        "--train-file",
        &data.to_string_lossy(),
        "--init-adapter",
        &reference_dir.join("adapter_init").to_string_lossy(),
        "--prefix-dropout",
        "0",
        "--no-shuffle",
        "--logging-steps",
        "1",
        "--max-source-length",
        &reference["preprocess"]["max_input_length"].to_string(),
        "--max-target-length",
        &reference["preprocess"]["max_output_length"].to_string(),
        "--per-device-train-batch-size",
        &text("per_device_train_batch_size"),
        "--gradient-accumulation-steps",
        &text("gradient_accumulation_steps"),
        "--learning-rate",
        &text("learning_rate"),
        "--weight-decay",
        &text("weight_decay"),
        "--warmup-steps",
        &text("warmup_steps"),
        "--max-grad-norm",
        &text("max_grad_norm"),
        "--max-steps",
        &text("max_steps"),
        "--output-dir",
        &out.to_string_lossy(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.join("trainer_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|row: &serde_json::Value| row.get("loss").is_some())
        .collect();
    let trajectory = reference["trajectory"].as_array().unwrap();
    assert_eq!(rows.len(), trajectory.len());
    let relative = |a: f64, b: f64| (a - b).abs() / b.abs();
    for (row, step) in rows.iter().zip(trajectory) {
        let loss = relative(
            row["loss"].as_f64().unwrap(),
            step["loss_unrounded"].as_f64().unwrap(),
        );
        let norm = relative(
            row["grad_norm"].as_f64().unwrap(),
            step["grad_norm"].as_f64().unwrap(),
        );
        assert!(loss < 1e-6 && norm < 1e-4, "{row} vs {step}");
    }
    let ours =
        candle_core::safetensors::load(out.join("adapter.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let theirs = candle_core::safetensors::load(
        reference_dir.join("trained_prefix.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let name = "transformer.prefix_encoder.embedding.weight";
    let (a, b) = (
        ours[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        theirs[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
    );
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let error = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale;
    assert!(error < 1e-5, "trained prefix relative error {error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
