//! A short pass of the soak script (`scripts/soak.py`, 20 minutes by default) against this build:
//! every kind of traffic it makes succeeds, with no error, and it reports its figures.

use std::process::Command;

#[test]
fn a_short_soak_has_no_errors() {
    let python = std::env::var("GLMTUNE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let report = std::env::temp_dir().join(format!("glmtune-soak-{}.json", std::process::id()));
    let output = Command::new(python)
        .arg(root.join("scripts/soak.py"))
        .args(["--binary", env!("CARGO_BIN_EXE_glmtune"), "--seconds", "40"])
        .arg("--json")
        .arg(&report)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["errors"], 0, "{printed}");
    assert_eq!(report["server_exit_code"], 0, "{printed}");
    assert!(report["requests"].as_u64().unwrap() > 50, "{printed}");
    // Each kind of traffic happened at least once.
    for kind in [
        "upload",
        "upload_multipart",
        "run_create",
        "chat_openai",
        "events",
        "read",
    ] {
        assert!(
            report["by_kind"][kind]["requests"].as_u64().unwrap_or(0) > 0,
            "no {kind} request: {printed}"
        );
    }
    assert!(report["runs_started"].as_u64().unwrap() > 0, "{printed}");
    assert!(report["events_received"].as_u64().unwrap() > 0, "{printed}");
    let cached = report["adapters_in_memory"].as_u64().unwrap();
    assert!(
        cached <= report["adapter_cache"].as_u64().unwrap(),
        "{printed}"
    );
    let memory = &report["memory"];
    assert!(memory["start_mib"].as_f64().unwrap() > 1.0, "{printed}");
}
