//! `--device cpu|cuda|cuda:N` on every subcommand that runs the model: parsing, the refusal of a
//! binary built without CUDA (or, built with it, on a machine without a GPU), and `--device cpu`
//! giving exactly the answers of no flag.

use std::path::PathBuf;
use std::process::{Command, Output};

mod common;
use common::{fixture, glmtune};

fn temp_path(name: &str) -> PathBuf {
    common::temp_path("device", name)
}

fn one_stderr_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one line expected: {stderr}"
    );
    stderr.trim_end().to_owned()
}

/// Each subcommand that takes `--device`, with arguments that would otherwise run (or start).
fn commands_with(device: &str, out: &str) -> Vec<Vec<String>> {
    let model = fixture("model");
    let adapter = fixture("adapter_trained");
    let train_file = fixture("train.jsonl");
    let lists: Vec<Vec<&str>> = vec![
        vec!["logits", "--model", &model, "--ids", "5,6", "--out", out],
        vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            "hi",
            "--greedy",
            "--max-new-tokens",
            "2",
        ],
        vec!["chat", "--model", &model],
        vec![
            "eval",
            "--model",
            &model,
            "--adapter",
            &adapter,
            "--validation-file",
            &train_file,
            "--output-dir",
            out,
        ],
        vec![
            "train",
            "--model",
            &model,
            "--train-file",
            &train_file,
            "--output-dir",
            out,
            "--pre-seq-len",
            "4",
            "--max-steps",
            "1",
        ],
        vec!["serve", "--bind", "127.0.0.1:0", "--data-dir", out],
    ];
    lists
        .into_iter()
        .map(|mut list| {
            list.extend(["--device", device]);
            list.into_iter().map(str::to_owned).collect()
        })
        .collect()
}

fn run(args: &[String]) -> Output {
    glmtune(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_is_refused_by_a_build_without_it() {
    let out = temp_path("refused");
    for device in ["cuda", "cuda:1"] {
        for args in commands_with(device, &out.to_string_lossy()) {
            let output = run(&args);
            assert_eq!(output.status.code(), Some(1), "{args:?}");
            assert_eq!(
                one_stderr_line(&output),
                "glmtune: this glmtune was built without CUDA; build it with scripts/build-cuda.sh",
                "{args:?}"
            );
        }
    }
    // Refused before anything was written (serve would have created its database there).
    assert!(!out.exists());
}

#[cfg(not(feature = "cuda"))]
#[test]
fn serve_gpus_is_refused_by_a_build_without_cuda() {
    let out = temp_path("gpus-refused");
    for gpus in ["all", "0,1"] {
        let output = glmtune(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            &out.to_string_lossy(),
            "--gpus",
            gpus,
        ]);
        assert_eq!(output.status.code(), Some(1), "--gpus {gpus}");
        assert_eq!(
            one_stderr_line(&output),
            "glmtune: --gpus: this glmtune was built without CUDA; build it with scripts/build-cuda.sh"
        );
    }
    assert!(!out.exists());
    // A bad list is a usage error.
    let output = glmtune(&[
        "serve",
        "--data-dir",
        &out.to_string_lossy(),
        "--gpus",
        "0,x",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(one_stderr_line(&output).contains("not a GPU ordinal"));
}

// Built with CUDA, on a machine without a GPU (the test machines): one line that names what is
// missing, exit 1, no panic. With a GPU the commands run, and this test says nothing.
#[cfg(feature = "cuda")]
#[test]
fn cuda_without_a_gpu_is_one_line_and_exit_1() {
    let out = temp_path("no-gpu");
    for args in commands_with("cuda", &out.to_string_lossy()) {
        if args[0] == "serve" || args[0] == "chat" {
            // They would run until stopped where a GPU is present.
            continue;
        }
        let output = run(&args);
        if !output.status.success() {
            assert_eq!(output.status.code(), Some(1), "{args:?}");
            let line = one_stderr_line(&output);
            assert!(line.starts_with("glmtune: --device cuda:0: "), "{line}");
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_bad_device_is_a_usage_error() {
    let out = temp_path("bad");
    for device in ["tpu", "cuda:x", "cuda:-1", "gpu"] {
        for args in commands_with(device, &out.to_string_lossy()) {
            let output = run(&args);
            assert_eq!(output.status.code(), Some(2), "{args:?}");
            let line = one_stderr_line(&output);
            assert!(
                line.starts_with("glmtune: invalid value") && line.contains(device),
                "{line}"
            );
        }
    }
    assert!(!out.exists());
}

#[test]
fn wgpu_backend_with_a_cuda_device_is_refused() {
    let out = temp_path("wgpu.safetensors");
    let output = glmtune(&[
        "logits",
        "--model",
        &fixture("model"),
        "--ids",
        "5,6",
        "--out",
        &out.to_string_lossy(),
        "--backend",
        "wgpu",
        "--device",
        "cuda",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        one_stderr_line(&output),
        "glmtune: --backend wgpu runs on a wgpu adapter; --device cuda:0 needs --backend cpu"
    );
}

#[test]
fn device_cpu_gives_the_answers_of_no_flag() {
    let model = fixture("model");
    let adapter = fixture("adapter_trained");
    // logits: the same file, byte for byte.
    let files: Vec<Vec<u8>> = [None, Some("cpu")]
        .into_iter()
        .map(|device| {
            let out = temp_path(&format!("logits-{}.safetensors", device.unwrap_or("none")));
            let out_text = out.to_string_lossy().into_owned();
            let mut args = vec![
                "logits",
                "--model",
                &model,
                "--adapter",
                &adapter,
                "--ids",
                "5,6,7",
                "--out",
                &out_text,
            ];
            args.extend(device.map(|d| ["--device", d]).into_iter().flatten());
            let output = glmtune(&args);
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let bytes = std::fs::read(&out).unwrap();
            let _ = std::fs::remove_file(&out);
            bytes
        })
        .collect();
    assert_eq!(files[0], files[1]);
    // generate: the same greedy ids and text.
    let answers: Vec<Vec<u8>> = [None, Some("cpu")]
        .into_iter()
        .map(|device| {
            let mut args = vec![
                "generate",
                "--model",
                &model,
                "--prompt",
                "你好",
                "--greedy",
                "--max-new-tokens",
                "6",
                "--json",
            ];
            args.extend(device.map(|d| ["--device", d]).into_iter().flatten());
            let output = glmtune(&args);
            assert!(output.status.success());
            output.stdout
        })
        .collect();
    assert_eq!(answers[0], answers[1]);
}

/// scripts/gpu-check.sh's dry run: the comparisons it makes on a GPU, made cpu against cpu (so
/// exactly equal), and bench runs that fail ending as error rows of the table, not as its end.
#[test]
fn gpu_check_dry_run_compares_and_tabulates() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/gpu_check.py");
    let output = Command::new("python3")
        .arg(script)
        .args(["--device", "cpu", "--bin", env!("CARGO_BIN_EXE_glmtune")])
        .args(["--bench-config", "no-such-config", "--bench-steps", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = |check: &str, status: &str| {
        stdout
            .lines()
            .filter(|line| line.starts_with(check) && line.trim_end().ends_with(status))
            .count()
    };
    // Four fixtures (two with an adapter) × f32, bf16, f16; two training dtypes; six bench cases.
    assert_eq!(rows("logits", "| ok"), 12, "{stdout}");
    assert_eq!(rows("train", "| ok"), 2, "{stdout}");
    assert_eq!(rows("bench", "| error"), 6, "{stdout}");
    assert!(stdout.contains("0.00e+00 of max |logit|"), "{stdout}");
}
