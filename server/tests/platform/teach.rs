//! `glmtune data teach` against teachers on 127.0.0.1: this server itself serving the fixture over
//! `/v1` (its answers become the records' responses), and a stand-in that fails on purpose (429,
//! then 500, then the answer) to show the retries; a job killed mid-way and run again ends with
//! every record once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glmtune_engine::data::augment::MinHash;
use serde_json::{json, Value};

use crate::harness::{fixture, Backend, Server, Site};

fn teach(out: &Path, url: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(["data", "teach", &fixture("train.jsonl"), "--out"])
        .arg(out)
        .args(["--teacher-url", url, "--teacher-model", "tiny"])
        .args(extra)
        .output()
        .unwrap()
}

/// The report of a `glmtune data teach` that succeeded.
fn report_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_server_itself_teaches_and_its_answers_become_the_responses() {
    let site = Site::new("teach", Backend::Sqlite);
    let key = site.token("member");
    let server = site.start(&[]);
    let out = site.data_dir.join("taught.jsonl");
    let url = format!("http://{}/v1", server.address);
    let output = teach(
        &out,
        &url,
        &[
            "--teacher-key",
            &key,
            "--max-tokens",
            "8",
            "--concurrency",
            "2",
        ],
    );
    let report = report_of(&output);
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(!printed.contains(&key), "the key is never printed");
    assert_eq!(
        (report["written"].clone(), report["retries"].clone()),
        (json!(8), json!(0))
    );
    assert!(
        report["completion_tokens"].as_u64().unwrap() > 0,
        "{report}"
    );
    let rows = lines(&out);
    let mut parents: Vec<u64> = rows
        .iter()
        .map(|r| r["provenance"]["parent"].as_u64().unwrap())
        .collect();
    parents.sort_unstable();
    assert_eq!(parents, (1..=8).collect::<Vec<_>>());
    // A record's response is what the server answers its prompt.
    let row = &rows[0];
    assert_eq!(row["provenance"]["method"], "teacher_answer");
    let asked = server.post(
        "/v1/chat/completions",
        &key,
        &json!({"model": "tiny", "messages": [{"role": "user", "content": row["prompt"]}], "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(asked.status, 200, "{}", asked.text());
    let answer = asked.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(row["response"], answer.as_str());
    // A refusal that is not worth retrying (a wrong key) fails at once, naming the record.
    let refused = teach(
        &site.data_dir.join("refused.jsonl"),
        &url,
        &["--teacher-key", "glm-wrong"],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("record"),
        "{stderr}"
    );

    // An augmented version from the same teacher: 3 rewordings a prompt, checked against a
    // validation file of two of the parent's records. Every new record names where it came
    // from, and none is like a parent prompt, a validation prompt or another new one.
    let parent: Vec<Value> = lines(Path::new(&fixture("train.jsonl")));
    let validation = site.data_dir.join("validation.jsonl");
    let held_out: Vec<String> = parent[..2].iter().map(|r| r.to_string()).collect();
    std::fs::write(&validation, held_out.join("\n") + "\n").unwrap();
    let out = site.data_dir.join("reworded.jsonl");
    let report = report_of(&teach(
        &out,
        &url,
        &[
            "--teacher-key",
            &key,
            "--task",
            "paraphrase",
            "--samples",
            "3",
            "--max-tokens",
            "12",
            "--validation-file",
            validation.to_str().unwrap(),
        ],
    ));
    let count = |field: &str| report[field].as_u64().unwrap() as usize;
    assert_eq!(
        count("kept") + count("dropped_duplicates") + count("dropped_leaking"),
        24,
        "{report}"
    );
    let rows = lines(&out);
    assert_eq!(rows.len(), 8 + count("kept"), "{report}");
    let hasher = MinHash::new(42);
    let mut known: Vec<_> = parent
        .iter()
        .map(|r| hasher.signature(r["content"].as_str().unwrap()))
        .collect();
    for row in &rows[8..] {
        let provenance = &row["provenance"];
        assert_eq!(
            (&provenance["method"], &provenance["teacher"]),
            (&json!("teacher_paraphrase"), &json!("tiny"))
        );
        assert!(provenance["template"]
            .as_str()
            .unwrap()
            .contains("{prompt}"));
        let n = provenance["parent"].as_u64().unwrap() as usize;
        assert_eq!(
            row["response"],
            parent[n - 1]["summary"],
            "the answer is kept"
        );
        let signature = hasher.signature(row["prompt"].as_str().unwrap());
        for other in &known {
            assert!(MinHash::similarity(&signature, other) < 0.9, "{row}");
        }
        known.push(signature);
    }
}

/// A teacher that answers each question `429`, then `500`, then `答：QUESTION`, each answer after
/// `delay`; its address.
fn flaky_teacher(delay: Duration) -> (String, Arc<AtomicUsize>) {
    flaky_teacher_with_key(delay, None)
}

/// [`flaky_teacher`] that answers 401 to a request without `Bearer KEY`.
fn flaky_teacher_with_key(
    delay: Duration,
    key: Option<&'static str>,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        let attempts = std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new());
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut authorized = key.is_none();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(key) = key {
                    authorized |= line.trim() == format!("authorization: Bearer {key}")
                        || line.trim() == format!("Authorization: Bearer {key}");
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            // A client killed mid-request (the test kills one) leaves a request cut short.
            let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let Some(question) = request["messages"][0]["content"].as_str() else {
                continue;
            };
            let question = question.to_owned();
            let attempt = {
                let mut attempts = attempts.lock().unwrap();
                let n = attempts.entry(question.clone()).or_default();
                *n += 1;
                *n
            };
            let attempt = if authorized { attempt } else { 0 };
            let (status, extra, body) = match attempt {
                0 => ("401 Unauthorized", "", "{}".to_owned()),
                1 => (
                    "429 Too Many Requests",
                    "Retry-After: 0\r\n",
                    "{}".to_owned(),
                ),
                2 => ("500 Internal Server Error", "", "{}".to_owned()),
                _ => {
                    std::thread::sleep(delay);
                    // A judge is told the second answer is best; a seed shows in the answer.
                    let text = if question.starts_with("下面是同一个问题的几个回答") {
                        "2".to_owned()
                    } else {
                        match request["seed"].as_u64() {
                            Some(seed) => format!("答：{question}#{seed}"),
                            None => format!("答：{question}"),
                        }
                    };
                    let answer = json!({
                        "id": "x", "object": "chat.completion", "created": 0, "model": "tiny",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
                    });
                    ("200 OK", "", answer.to_string())
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://{address}/v1"), requests)
}

#[test]
fn a_failing_teacher_is_retried_and_a_killed_job_ends_with_every_record_once() {
    let site = Site::new("teach-flaky", Backend::Sqlite);
    let dir = &site.data_dir;
    std::fs::create_dir_all(dir).unwrap();
    let (url, requests) = flaky_teacher(Duration::ZERO);
    let out = dir.join("taught.jsonl");
    let output = teach(&out, &url, &["--concurrency", "3"]);
    let report = report_of(&output);
    assert_eq!(
        (report["written"].clone(), report["retries"].clone()),
        (json!(8), json!(16))
    );
    assert_eq!(requests.load(Ordering::SeqCst), 24);
    for row in lines(&out) {
        assert_eq!(
            row["response"],
            format!("答：{}", row["prompt"].as_str().unwrap())
        );
    }

    // Killed once three answers are in, with a half-written line after them; run again.
    let (url, _) = flaky_teacher(Duration::from_millis(150));
    let out = dir.join("killed.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(["data", "teach", &fixture("train.jsonl"), "--out"])
        .arg(&out)
        .args([
            "--teacher-url",
            &url,
            "--teacher-model",
            "tiny",
            "--concurrency",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // The answers so far are in the job's journal; the output is made at the end.
    let journal = dir.join("killed.jsonl.journal");
    while std::fs::read_to_string(&journal).map_or(0, |t| t.lines().count()) < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = lines(&journal).len();
    assert!(before < 8, "killed too late");
    assert!(!out.exists(), "no output before every answer is in");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(b"{\"prompt\": \"half")
        .unwrap();
    let output = teach(&out, &url, &[]);
    let report = report_of(&output);
    assert_eq!(report["already_done"], before);
    assert_eq!(report["written"], 8 - before);
    let mut parents: Vec<u64> = lines(&out)
        .iter()
        .map(|r| r["provenance"]["parent"].as_u64().unwrap())
        .collect();
    parents.sort_unstable();
    assert_eq!(parents, (1..=8).collect::<Vec<_>>(), "every record once");
}

#[test]
fn a_teacher_backtranslates_prompts_and_asks_questions_about_documents() {
    let site = Site::new("teach-tasks", Backend::Sqlite);
    let dir = &site.data_dir;
    std::fs::create_dir_all(dir).unwrap();
    let (url, requests) = flaky_teacher(Duration::ZERO);
    // Back-translation: two questions a record, the second about the first's answer.
    let out = dir.join("back.jsonl");
    let output = teach(
        &out,
        &url,
        &["--task", "backtranslate", "--concurrency", "8"],
    );
    let report = report_of(&output);
    assert_eq!(requests.load(Ordering::SeqCst), 8 * 2 * 3);
    let parent: Vec<Value> = lines(Path::new(&fixture("train.jsonl")));
    // New prompts join the parent's records: the version starts with them, as they were. The
    // stand-in's echoes are mostly the instructions, so some are near-duplicates of others.
    let rows = lines(&out);
    let kept = report["kept"].as_u64().unwrap() as usize;
    assert_eq!(
        kept + report["dropped_duplicates"].as_u64().unwrap() as usize,
        8
    );
    assert!(kept > 0, "{report}");
    assert_eq!(rows.len(), 8 + kept);
    for (row, own) in rows.iter().zip(&parent) {
        assert_eq!(
            (&row["prompt"], &row["response"]),
            (&own["content"], &own["summary"])
        );
        assert!(row.get("provenance").is_none());
    }
    for row in &rows[8..] {
        let n = row["provenance"]["parent"].as_u64().unwrap() as usize;
        assert_eq!(row["provenance"]["method"], "teacher_backtranslation");
        let prompt = parent[n - 1]["content"].as_str().unwrap();
        assert_eq!(
            row["response"],
            parent[n - 1]["summary"],
            "the answer is kept"
        );
        // 答：(the Chinese instruction, then the first answer: 答：(the English instruction,
        // then the prompt)).
        let text = row["prompt"].as_str().unwrap();
        assert!(
            text.starts_with("答：把下面的英文翻译成中文") && text.ends_with(prompt),
            "{text}"
        );
    }
    // Answers rewritten: the prompt kept, the teacher's rewriting of the record's answer.
    let out = dir.join("rewritten.jsonl");
    let output = teach(&out, &url, &["--task", "rewrite", "--concurrency", "8"]);
    report_of(&output);
    for row in lines(&out) {
        let n = row["provenance"]["parent"].as_u64().unwrap() as usize;
        assert_eq!(row["provenance"]["method"], "teacher_rewrite");
        assert_eq!(row["prompt"], parent[n - 1]["content"]);
        let answer = row["response"].as_str().unwrap();
        let own = parent[n - 1]["summary"].as_str().unwrap();
        assert!(
            answer.starts_with("答：请用专业") && answer.ends_with(own),
            "{answer}"
        );
    }
    // Three answers a prompt, the one the teacher judges best kept (its second).
    let out = dir.join("judged.jsonl");
    let output = teach(
        &out,
        &url,
        &["--samples", "3", "--keep", "judge", "--concurrency", "8"],
    );
    report_of(&output);
    let rows = lines(&out);
    assert_eq!(rows.len(), 8, "one record a prompt");
    for row in rows {
        assert_eq!(
            row["provenance"]["picked"],
            json!({"answer": 2, "of": 3, "by": "judge"})
        );
        let prompt = row["prompt"].as_str().unwrap();
        assert_eq!(row["response"], format!("答：{prompt}#2"));
    }
    // Questions about a document's passages: each record a question and its answer.
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    // Three passages on three subjects: their questions are not near-duplicates.
    std::fs::write(
        docs.join("guide.md"),
        format!(
            "{}\n\n{}\n\n{}\n",
            "高血压患者应当少盐饮食，规律服药。".repeat(30),
            "骨折之后需要固定伤处并尽快就医。".repeat(32),
            "儿童发热超过三天要去医院检查血常规。".repeat(28)
        ),
    )
    .unwrap();
    std::fs::write(docs.join("skip.pdf"), b"not text").unwrap();
    let out = dir.join("questions.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_glmtune"))
        .args(["data", "teach"])
        .arg(&docs)
        .arg("--out")
        .arg(&out)
        .args([
            "--teacher-url",
            &url,
            "--teacher-model",
            "tiny",
            "--task",
            "questions",
        ])
        .output()
        .unwrap();
    report_of(&output);
    let rows = lines(&out);
    assert_eq!(rows.len(), 3, "one record a passage");
    for row in rows {
        let provenance = &row["provenance"];
        assert_eq!(provenance["method"], "teacher_questions");
        assert!(provenance["document"]
            .as_str()
            .unwrap()
            .ends_with("guide.md"));
        let question = row["prompt"].as_str().unwrap();
        assert!(
            question.starts_with("答：根据下面的资料提出一个问题"),
            "{question}"
        );
        let answer = row["response"].as_str().unwrap();
        assert!(
            answer.starts_with("答：根据资料回答问题") && answer.ends_with(question),
            "{answer}"
        );
    }
}

#[test]
fn paraphrases_drop_near_duplicates_and_validation_leaks() {
    let site = Site::new("teach-dedupe", Backend::Sqlite);
    let dir = &site.data_dir;
    std::fs::create_dir_all(dir).unwrap();
    let (url, _) = flaky_teacher(Duration::ZERO);
    // The stand-in answers "答：QUESTION" and "答：QUESTION#2" for a second sample: a prompt's two
    // paraphrases are near-duplicates (Jaccard of 3-grams 0.95), two prompts' are not (0.79 to
    // 0.82). The validation set holds the first record's paraphrase: both of its leak.
    let parent: Vec<Value> = lines(Path::new(&fixture("train.jsonl")));
    let first = parent[0]["content"].as_str().unwrap();
    let leaked = format!("答：请换一种说法改写下面的问题，意思不变，只输出改写后的问题：\n{first}");
    let validation = dir.join("validation.jsonl");
    std::fs::write(
        &validation,
        json!({"content": leaked, "summary": "…"}).to_string() + "\n",
    )
    .unwrap();
    let out = dir.join("paraphrased.jsonl");
    let args = [
        "--task",
        "paraphrase",
        "--samples",
        "2",
        "--concurrency",
        "4",
        "--validation-file",
        validation.to_str().unwrap(),
    ];
    let report = report_of(&teach(&out, &url, &args));
    assert_eq!(
        (
            &report["kept"],
            &report["dropped_duplicates"],
            &report["dropped_leaking"],
            &report["parent_included"]
        ),
        (&json!(7), &json!(7), &json!(2), &json!(8)),
        "{report}"
    );
    let rows = lines(&out);
    assert_eq!(rows.len(), 15);
    let mut kept: Vec<(u64, u64)> = rows[8..]
        .iter()
        .map(|r| {
            let p = &r["provenance"];
            (p["parent"].as_u64().unwrap(), p["copy"].as_u64().unwrap())
        })
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, (2..=8).map(|n| (n, 1)).collect::<Vec<_>>());
    // Run again: every answer is in the journal (the dropped ones too), nothing is asked.
    let again = report_of(&teach(&out, &url, &args));
    assert_eq!(
        (&again["already_done"], &again["written"]),
        (&json!(16), &json!(0))
    );
    assert_eq!(lines(&out), rows);
}

/// Queues a teaching job (`POST teach` with `body`) and waits for its end: the job then.
fn ended(server: &Server, key: &str, teach: &str, body: &Value) -> Value {
    let job = server.post(teach, key, body);
    assert_eq!(job.status, 202, "{}", job.text());
    let path = format!("/api/v1/teach-jobs/{}", job.json()["id"].as_str().unwrap());
    let started = Instant::now();
    loop {
        let job = server.get(&path, key).json();
        if job["state"] != "queued" && job["state"] != "running" {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_registered_teacher_makes_a_version_through_a_server_restart() {
    let site = Site::new("teach-job", Backend::Sqlite);
    let key = site.token("member");
    let mut server = site.start(&[]);
    let dataset = server.upload_fixture(&key);
    let (url, _) = flaky_teacher_with_key(Duration::from_millis(150), Some("sk-stand-in"));
    let created = server.post(
        "/api/v1/teachers",
        &key,
        &json!({"name": "stand-in", "base_url": url, "model": "tiny", "key": "sk-stand-in", "concurrency": 1}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let teacher = created.json();
    assert_eq!(teacher["has_key"], true);
    let listed = server.get("/api/v1/teachers", &key).text();
    assert!(!created.text().contains("sk-stand-in") && !listed.contains("sk-stand-in"));
    let job = server.post(
        &format!("/api/v1/datasets/{}/teach", dataset["id"].as_str().unwrap()),
        &key,
        &json!({"teacher": teacher["id"], "task": "answer"}),
    );
    assert_eq!(job.status, 202, "{}", job.text());
    let id = job.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/teach-jobs/{id}");
    let started = Instant::now();
    // Killed with three answers in.
    while server.get(&path, &key).json()["written"].as_i64().unwrap() < 3 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("KILL");
    let _ = server.child.wait();
    // The key is sealed at rest: the database does not hold it.
    let database = std::fs::read(site.data_dir.join("glmtune.db")).unwrap();
    assert!(!database.windows(11).any(|w| w == b"sk-stand-in"));
    let log = site.data_dir.join("restarted.log");
    let mut server = site.start_logged(&[], &log);
    let done = loop {
        let job = server.get(&path, &key).json();
        if job["state"] != "queued" && job["state"] != "running" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{job}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done["state"], "succeeded", "{done}");
    let made = server
        .get(
            &format!(
                "/api/v1/datasets/{}",
                done["made_dataset"].as_str().unwrap()
            ),
            &key,
        )
        .json();
    assert_eq!(made["parent_id"], dataset["id"]);
    assert_eq!(made["derivation"]["kind"], "teach");
    assert_eq!(made["records"], 8);
    let content = server
        .get(
            &format!("/api/v1/datasets/{}/content", made["id"].as_str().unwrap()),
            &key,
        )
        .text();
    let mut parents: Vec<u64> = content
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["provenance"]["parent"]
                .as_u64()
                .unwrap()
        })
        .collect();
    parents.sort_unstable();
    assert_eq!(parents, (1..=8).collect::<Vec<_>>(), "every record once");
    assert_eq!(done["report"]["kept"], 8, "{done}");
    assert_eq!(made["derivation"]["report"], done["report"]);
    // The diff view: each new answer beside the parent's record.
    let changes = server
        .get(
            &format!("/api/v1/datasets/{}/changes", made["id"].as_str().unwrap()),
            &key,
        )
        .json();
    assert_eq!(changes["total"], 8, "{changes}");
    for change in changes["changes"].as_array().unwrap() {
        let (before, after) = (&change["before"], &change["after"]);
        assert_eq!(before["prompt"], after["prompt"]);
        assert_eq!(
            after["response"],
            format!("答：{}", after["prompt"].as_str().unwrap())
        );
        assert_ne!(before["response"], after["response"]);
    }
    assert!(done["report"]["completion_tokens"].as_u64().unwrap() > 0);

    // Questions about documents sent with the request: a version of the dataset's records and
    // a question a passage, checked against a validation dataset.
    let teach = format!("/api/v1/datasets/{}/teach", dataset["id"].as_str().unwrap());
    let guide = format!(
        "{}\n\n{}",
        "哮喘患者应当避免接触过敏原。".repeat(40),
        "骨折之后需要固定伤处并尽快就医。".repeat(35)
    );
    for (bad, field) in [
        (
            json!({"teacher": teacher["id"], "task": "questions"}),
            "documents",
        ),
        (
            json!({"teacher": teacher["id"], "task": "questions", "documents": [{"name": "../x.md", "text": "字"}]}),
            "documents[0].name",
        ),
        (
            json!({"teacher": teacher["id"], "task": "answer", "keep": "judge"}),
            "keep",
        ),
        (
            json!({"teacher": teacher["id"], "task": "answer", "then_template": "{first}"}),
            "then_template",
        ),
        (
            json!({"teacher": teacher["id"], "task": "answer", "preview": 0}),
            "preview",
        ),
    ] {
        let refused = server.post(&teach, &key, &bad);
        assert_eq!(refused.status, 400, "{}", refused.text());
        assert!(refused.text().contains(field), "{}", refused.text());
    }
    let done = ended(
        &server,
        &key,
        &teach,
        &json!({"teacher": teacher["id"], "task": "questions", "documents": [{"name": "guide.md", "text": guide}], "validation_dataset": dataset["id"]}),
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    let report = &done["report"];
    assert_eq!(
        (
            &report["kept"],
            &report["parent_included"],
            &report["dropped_leaking"]
        ),
        (&json!(2), &json!(8), &json!(0)),
        "{done}"
    );
    let made = done["made_dataset"].as_str().unwrap();
    let version = server.get(&format!("/api/v1/datasets/{made}"), &key).json();
    assert_eq!(
        version["derivation"]["request"]["documents"],
        json!([{"name": "guide.md", "text": ""}]),
        "the version keeps the documents' names, not their text"
    );
    let content = server
        .get(&format!("/api/v1/datasets/{made}/content"), &key)
        .text();
    let rows: Vec<Value> = content
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[9]["provenance"]["document"], "guide.md");
    let changes = server
        .get(&format!("/api/v1/datasets/{made}/changes?limit=1"), &key)
        .json();
    assert_eq!(changes["total"], 2, "{changes}");
    assert_eq!(changes["changes"].as_array().unwrap().len(), 1);
    let change = &changes["changes"][0];
    assert_eq!(
        (
            &change["record"],
            &change["origin"]["document"],
            &change["before"]
        ),
        (&json!(9), &json!("guide.md"), &Value::Null)
    );
    assert!(rows[9]["prompt"]
        .as_str()
        .unwrap()
        .starts_with("答：根据下面的资料提出一个问题"));

    // A preview: the first 2 records back-translated with a second question of our own, shown
    // with the job and stored as no version.
    let datasets_before = server.get("/api/v1/datasets", &key).json()["data"]
        .as_array()
        .unwrap()
        .len();
    let done = ended(
        &server,
        &key,
        &teach,
        &json!({"teacher": teacher["id"], "task": "backtranslate", "preview": 2, "then_template": "译回中文：{first}", "threshold": 0.99}),
    );
    assert_eq!(
        (&done["state"], &done["made_dataset"]),
        (&json!("succeeded"), &Value::Null),
        "{done}"
    );
    let preview = &done["preview"];
    assert_eq!(preview["total"], 2, "{done}");
    for (n, change) in preview["changes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(change["origin"]["parent"], n + 1);
        let prompt = change["after"]["prompt"].as_str().unwrap();
        let own = change["before"]["prompt"].as_str().unwrap();
        assert!(
            prompt.starts_with("答：译回中文：") && prompt.ends_with(own),
            "{prompt}"
        );
        assert_eq!(change["before"]["response"], change["after"]["response"]);
    }
    let datasets_after = server.get("/api/v1/datasets", &key).json()["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(datasets_before, datasets_after, "a preview stores nothing");

    // Stopped (SIGTERM) with a job running: the server waits for the teaching thread to stop
    // its child before its runtime ends, and exits cleanly.
    let job = server.post(
        &teach,
        &key,
        &json!({"teacher": teacher["id"], "task": "answer"}),
    );
    assert_eq!(job.status, 202, "{}", job.text());
    let path = format!("/api/v1/teach-jobs/{}", job.json()["id"].as_str().unwrap());
    while server.get(&path, &key).json()["written"].as_i64().unwrap() < 1 {
        assert!(started.elapsed() < Duration::from_secs(240), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("TERM");
    let status = server.child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        status.success() && !log.contains("panicked"),
        "{status}: {log}"
    );
}
