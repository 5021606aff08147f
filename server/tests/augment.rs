//! `glmtune data augment` on the medical example: a new version whose new records name their
//! parent and method, keep the parent's answer, repeat no prompt of the parent, leak no
//! validation prompt, read back as a dataset, and come out the same for the same seed.

mod common;

use std::path::{Path, PathBuf};

use glmtune_engine::data::augment::{MinHash, Provenance};
use glmtune_engine::data::{read_records, DatasetFormat};

use common::glmtune;

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/medical")
        .join(file)
}

#[test]
fn a_new_version_names_its_parents_and_repeats_and_leaks_nothing() {
    let dir = common::scratch("augment", "medical");
    std::fs::create_dir_all(&dir).unwrap();
    let parent = example("train.jsonl");
    // A validation set holding one of the training prompts: what is made of it would leak.
    let parent_text = std::fs::read_to_string(&parent).unwrap();
    let leaked_line = parent_text.lines().nth(4).unwrap();
    let validation = dir.join("validation.jsonl");
    std::fs::write(&validation, format!("{leaked_line}\n")).unwrap();
    let run = |out: &Path| {
        let output = glmtune(&[
            "data",
            "augment",
            &parent.to_string_lossy(),
            "--out",
            &out.to_string_lossy(),
            "--validation-file",
            &validation.to_string_lossy(),
            "--copies",
            "2",
            "--threshold",
            "0.8",
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let (first, second) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    let report = run(&first);
    run(&second);
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
        "seeded"
    );
    let parents = parent_text.lines().count();
    assert_eq!(report["parent_records"], parents);
    assert!(report["dropped_leaking"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["dropped_duplicates"].as_u64().unwrap() > 0,
        "{report}"
    );
    // It reads as a dataset: the parent's records, then the new ones.
    let (records, _) = read_records(&first, &DatasetFormat::Auto, false).unwrap();
    let new = report["new_records"].as_u64().unwrap() as usize;
    assert_eq!(records.len(), parents + new);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&first)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let leaked: serde_json::Value = serde_json::from_str(leaked_line).unwrap();
    let hasher = MinHash::new(42);
    let leaked_signature = hasher.signature(leaked["content"].as_str().unwrap());
    for (record, row) in records[parents..].iter().zip(&rows[parents..]) {
        let provenance: Provenance = serde_json::from_value(row["provenance"].clone()).unwrap();
        let parent = &records[provenance.parent - 1];
        assert_eq!(record.response, parent.response, "the answer is kept");
        assert!(records[..parents].iter().all(|p| p.prompt != record.prompt));
        assert!(
            MinHash::similarity(&hasher.signature(&record.prompt), &leaked_signature) < 0.8,
            "{}",
            record.prompt
        );
    }
    assert!(rows[..parents]
        .iter()
        .all(|r| r.get("provenance").is_none()));
}
