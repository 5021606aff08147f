//! What the server's test binaries share: the fixtures, the `glmtune` binary, scratch paths.
// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The ChatGLM-6B and ChatGLM3 fixtures (`tests/fixtures/`, made by THUDM's code).
pub const CHATGLM6B: &str = "chatglm6b-tiny";
pub const CHATGLM3: &str = "chatglm3-tiny";

/// A path in a fixture folder.
pub fn fixture_of(fixture: &str, path: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(fixture);
    dir.join(path).to_string_lossy().into_owned()
}

/// A path in the ChatGLM-6B fixture.
pub fn fixture(path: &str) -> String {
    fixture_of(CHATGLM6B, path)
}

/// A fixture's `expected.json`: the outputs of THUDM's code.
pub fn expected_of(fixture: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_of(fixture, "expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs the `glmtune` binary of this build.
pub fn glmtune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(args)
        .output()
        .unwrap()
}

/// The JSON a successful command printed (its stderr in the failure otherwise).
pub fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A path of this process's own in the temporary folder (`glmtune-KIND-PID-NAME`).
pub fn temp_path(kind: &str, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("glmtune-{kind}-{}-{name}", std::process::id()))
}

/// [`temp_path`], emptied of what an earlier run left there.
pub fn scratch(kind: &str, name: &str) -> PathBuf {
    let dir = temp_path(kind, name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The fixture's records with each answer moved to another prompt: a validation set the training
/// data does not teach, written to `dir/validation.jsonl`.
pub fn shifted_validation(dir: &std::path::Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(fixture("train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let mut shifted = record.clone();
            shifted["summary"] = records[(i + 3) % records.len()]["summary"].clone();
            format!("{shifted}\n")
        })
        .collect();
    let path = dir.join("validation.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}
