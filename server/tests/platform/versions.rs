//! Dataset versions over HTTP: a split's parts and an augmented version name their parent and how
//! they were made; the augmented version holds the parent's records and the new ones, each new
//! record naming its parent record, and none leaking the validation part.

use serde_json::json;

use crate::harness::{Backend, Site};

#[test]
fn an_augmented_version_names_its_parent_and_reads_as_a_dataset() {
    let site = Site::new("versions", Backend::Sqlite);
    let key = site.token("member");
    let server = site.start(&[]);
    let dataset = server.upload_fixture(&key);
    let id = dataset["id"].as_str().unwrap();
    let split = server.post(
        &format!("/api/v1/datasets/{id}/split"),
        &key,
        &json!({"validation_fraction": 0.25, "seed": 7}),
    );
    assert_eq!(split.status, 201, "{}", split.text());
    let split = split.json();
    let (train, validation) = (&split["train"], &split["validation"]);
    assert_eq!(train["parent_id"], id);
    assert_eq!(train["derivation"]["kind"], "split");
    assert_eq!(validation["derivation"]["part"], "validation");

    let train_id = train["id"].as_str().unwrap();
    let refused = server.post(
        &format!("/api/v1/datasets/{train_id}/augment"),
        &key,
        &json!({"methods": ["shuffle-everything"]}),
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("methods"), "{}", refused.text());

    let options =
        json!({"copies": 2, "rate": 0.2, "threshold": 0.8, "validation_dataset": validation["id"]});
    // A preview first: what it would make, nothing stored.
    let before = server.get("/api/v1/datasets", &key).json()["data"]
        .as_array()
        .unwrap()
        .len();
    let preview = server.post(
        &format!("/api/v1/datasets/{train_id}/augment/preview"),
        &key,
        &options,
    );
    assert_eq!(preview.status, 200, "{}", preview.text());
    let preview = preview.json();
    assert!(
        !preview["examples"].as_array().unwrap().is_empty(),
        "{preview}"
    );
    let after = server.get("/api/v1/datasets", &key).json()["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "a preview stores nothing");
    let made = server.post(
        &format!("/api/v1/datasets/{train_id}/augment"),
        &key,
        &options,
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let made = made.json();
    assert_eq!(made["parent_id"], train_id);
    let derivation = &made["derivation"];
    assert_eq!(derivation["kind"], "augment");
    let new = derivation["new_records"].as_i64().unwrap();
    assert_eq!(
        preview["new_records"].as_i64(),
        Some(new),
        "the preview made the same"
    );
    assert!(new > 0, "{made}");
    assert_eq!(
        made["records"].as_i64().unwrap(),
        train["records"].as_i64().unwrap() + new
    );
    // Its content: the parent's records, then the new ones with their provenance.
    let content = server.get(
        &format!("/api/v1/datasets/{}/content", made["id"].as_str().unwrap()),
        &key,
    );
    let rows: Vec<serde_json::Value> = content
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let parents = train["records"].as_u64().unwrap() as usize;
    assert_eq!(rows.len(), parents + new as usize);
    for row in &rows[parents..] {
        let parent = row["provenance"]["parent"].as_u64().unwrap() as usize;
        assert_eq!(row["response"], rows[parent - 1]["response"], "{row}");
        assert_ne!(row["prompt"], rows[parent - 1]["prompt"], "{row}");
    }
    // The diff view: each new record beside the parent record it was made from.
    let changes = server
        .get(
            &format!("/api/v1/datasets/{}/changes", made["id"].as_str().unwrap()),
            &key,
        )
        .json();
    assert_eq!(changes["total"], new, "{changes}");
    for change in changes["changes"].as_array().unwrap() {
        let record = change["record"].as_u64().unwrap() as usize;
        let parent = change["origin"]["parent"].as_u64().unwrap() as usize;
        assert_eq!(change["after"]["prompt"], rows[record - 1]["prompt"]);
        assert_eq!(change["before"]["prompt"], rows[parent - 1]["prompt"]);
    }
    // The list shows the version with its parent.
    let list = server.get("/api/v1/datasets", &key).json();
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == made["id"] && d["parent_id"] == train_id));
}
