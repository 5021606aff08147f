//! Training features against THUDM's `ptuning/main.py`: the fixture's features exactly as the
//! official `preprocess_function_train` built them, the `[Round i]` history template, labels
//! and padding, truncation and the `data inspect` statistics. Reading and its errors are
//! tested in `data_input.rs`.

mod common;

use std::path::Path;

use common::{expected, fixture_dir};
use glmtune_engine::data::{
    inspect, parse_records, preprocess_train, read_records, render_prompt, DataError,
    DatasetFormat, LengthStats, PreprocessOptions, ReadReport, Record, IGNORE_INDEX,
};
use glmtune_engine::tokenizer::ChatGlmTokenizer;

fn tokenizer() -> ChatGlmTokenizer {
    ChatGlmTokenizer::from_dir(&fixture_dir().join("model")).expect("fixture tokenizer")
}

fn parse(
    text: &[u8],
    format: &DatasetFormat,
    skip: bool,
) -> Result<(Vec<Record>, ReadReport), DataError> {
    parse_records(text, Path::new("mem.jsonl"), format, skip)
}

fn cols() -> DatasetFormat {
    DatasetFormat::columns("q", "a", Some("h"))
}

fn record(prompt: &str, response: &str, history: &[(&str, &str)]) -> Record {
    Record {
        prompt: prompt.into(),
        response: response.into(),
        history: history
            .iter()
            .map(|(q, a)| (q.to_string(), a.to_string()))
            .collect(),
        ..Record::default()
    }
}

#[test]
fn fixture_features_match_official_preprocessing() {
    let train = &expected()["train"];
    let path = fixture_dir().join("train.jsonl");
    let (records, report) = read_records(&path, &DatasetFormat::Auto, false).expect("train.jsonl");
    // The fixture is the official multi-turn layout: --prompt_column content
    // --response_column summary --history_column history.
    assert_eq!(
        report.format,
        DatasetFormat::columns("content", "summary", Some("history"))
    );
    assert!(report.history_column);
    assert_eq!((report.total, report.kept, report.blank_lines), (8, 8, 0));
    assert!(report.skipped_invalid.is_empty() && report.skipped_empty.is_empty());

    let options = PreprocessOptions::new(
        train["max_source_length"].as_u64().unwrap() as usize,
        train["max_target_length"].as_u64().unwrap() as usize,
        report.history_column,
    );
    let features = preprocess_train(&records, &tokenizer(), &options).unwrap();
    let want = train["features"].as_array().unwrap();
    assert_eq!(features.len(), want.len());
    for (i, (got, want)) in features.iter().zip(want).enumerate() {
        let ids: Vec<u32> = common::ids_of(&want["input_ids"]);
        let labels: Vec<i64> = want["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(got.input_ids, ids, "input_ids of feature {i}");
        assert_eq!(got.labels, labels, "labels of feature {i}");
        assert!(got.prompt_tokens >= ids.iter().position(|&t| t == 5).unwrap());
    }

    // Forcing the same columns gives the same; without the history column records whose
    // history is empty lose the `[Round 0]` template, so the fixture did use one.
    let forced = read_records(
        &path,
        &DatasetFormat::columns("content", "summary", Some("history")),
        false,
    )
    .unwrap();
    assert_eq!(forced.0, records);
    let plain = preprocess_train(
        &records,
        &tokenizer(),
        &PreprocessOptions::new(24, 16, false),
    )
    .unwrap();
    assert!(records[1].history.is_empty());
    assert_ne!(plain[1].input_ids, common::ids_of(&want[1]["input_ids"]));
}

#[test]
fn round_template_applies_even_to_empty_history() {
    let r = record("你好", "嗨", &[]);
    assert_eq!(render_prompt(&r, true), "[Round 0]\n问：你好\n答：");
    assert_eq!(render_prompt(&r, false), "你好");
    let r = record("q2", "a2", &[("q0", "a0"), ("q1", "a1")]);
    assert_eq!(
        render_prompt(&r, true),
        "[Round 0]\n问：q0\n答：a0\n[Round 1]\n问：q1\n答：a1\n[Round 2]\n问：q2\n答："
    );
}

#[test]
fn labels_start_at_sop_and_padding_follows_ignore_pad_token_for_loss() {
    let tok = tokenizer();
    let s = tok.special_ids();
    let r = record("hello world", "good morning", &[]);
    let mut options = PreprocessOptions::new(40, 40, false);
    options.source_prefix = "x ".into();
    let f = &preprocess_train(std::slice::from_ref(&r), &tok, &options).unwrap()[0];
    let a = tok.encode_plain("x hello world");
    let b = tok.encode_plain("good morning");
    let mut ids = a.clone();
    ids.extend([s.gmask, s.bos]);
    ids.extend(&b);
    ids.push(s.eos);
    let used = ids.len();
    assert!(
        a.len() < 40 && b.len() < 39,
        "the test strings must fit without truncation"
    );
    assert_eq!(&f.input_ids[..used], &ids[..]);
    assert!(f.input_ids[used..].iter().all(|&t| t == s.pad));
    assert!(f.labels[..=a.len()].iter().all(|&l| l == IGNORE_INDEX));
    assert_eq!(f.labels[a.len() + 1], i64::from(s.bos));
    assert!(f.labels[used..].iter().all(|&l| l == IGNORE_INDEX));
    assert_eq!((f.prompt_tokens, f.answer_tokens), (a.len(), b.len()));

    options.ignore_pad_token_for_loss = false;
    let f = &preprocess_train(&[r], &tok, &options).unwrap()[0];
    assert!(f.labels[used..].iter().all(|&l| l == i64::from(s.pad)));
}

#[test]
fn truncation_cuts_source_and_target_and_keeps_lengths_before() {
    let tok = tokenizer();
    let long_q = "高血压患者平时应该注意什么？".repeat(4);
    let long_a = "糖尿病患者应该按时服药，如有不适及时就医。".repeat(3);
    let records = vec![record(&long_q, &long_a, &[]), record("hi", "ok", &[])];
    let options = PreprocessOptions::new(6, 5, false);
    let features = preprocess_train(&records, &tok, &options).unwrap();
    let s = tok.special_ids();
    let f = &features[0];
    assert_eq!(f.input_ids.len(), 11);
    assert_eq!(&f.input_ids[..5], &tok.encode_plain(&long_q)[..5]);
    assert_eq!(&f.input_ids[5..7], &[s.gmask, s.bos]);
    assert_eq!(&f.input_ids[7..10], &tok.encode_plain(&long_a)[..3]);
    assert_eq!(f.input_ids[10], s.eos);
    assert_eq!(f.prompt_tokens, tok.encode_plain(&long_q).len());
    assert_eq!(f.answer_tokens, tok.encode_plain(&long_a).len());

    let (_, report) = parse(b"{\"q\":\"x\",\"a\":\"y\",\"h\":[]}", &cols(), false).unwrap();
    let summary = inspect(&records, &report, &tok, &options).unwrap();
    assert_eq!(
        summary.prompt_truncation.count,
        usize::from(tok.encode_plain("hi").len() > 5) + 1
    );
    assert_eq!(summary.prompt_truncation.limit, 5);
    assert_eq!(summary.prompt_truncation.max_cut, f.prompt_tokens - 5);
    assert_eq!(summary.answer_truncation.max_cut, f.answer_tokens - 3);
    assert_eq!(summary.prompts.max, f.prompt_tokens);
    let example = summary.example.as_ref().unwrap();
    assert_eq!(example.input_ids, f.input_ids);
    let text = summary.to_string();
    assert!(text.contains("prompts truncated to 5 tokens"), "{text}");
    assert!(text.contains("first example"), "{text}");

    assert!(matches!(
        preprocess_train(&records, &tok, &PreprocessOptions::new(0, 5, false)),
        Err(DataError::Options(_))
    ));
    assert!(preprocess_train(&records, &tok, &PreprocessOptions::new(5, 1, false)).is_err());
}

#[test]
fn length_stats_use_nearest_rank() {
    let lengths: Vec<usize> = (1..=100).collect();
    let s = LengthStats::from_lengths(&lengths);
    assert_eq!((s.min, s.p50, s.p90, s.p99, s.max), (1, 50, 90, 99, 100));
    assert!((s.mean - 50.5).abs() < 1e-9);
    assert_eq!(s.histogram.len(), 10);
    assert_eq!(s.histogram.iter().map(|h| h.2).sum::<usize>(), 100);
    let one = LengthStats::from_lengths(&[7]);
    assert_eq!(
        (one.min, one.p99, one.max, one.histogram.clone()),
        (7, 7, 7, vec![(7, 7, 1)])
    );
    assert_eq!(LengthStats::from_lengths(&[]).count, 0);
}

#[test]
fn a_prompt_spelling_sop_moves_the_context_length_as_in_python() {
    // `input_ids.index(bos)` finds the first `<sop>`: when the prompt text spells the special
    // token, the official labels start there, inside the prompt.
    let tok = tokenizer();
    let bos = tok.special_ids().bos;
    let r = record("问<sop>答", "好", &[]);
    let a = tok.encode_plain("问<sop>答");
    let at = a
        .iter()
        .position(|&t| t == bos)
        .expect("`<sop>` is a special token in text");
    let f = &preprocess_train(&[r], &tok, &PreprocessOptions::new(16, 8, false)).unwrap()[0];
    assert!(f.labels[..at].iter().all(|&l| l == IGNORE_INDEX));
    assert_eq!(f.labels[at], i64::from(bos));
    assert_eq!(f.labels[at + 1], i64::from(a[at + 1]));
}
