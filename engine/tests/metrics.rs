//! The P-Tuning evaluation metrics reproduce the official `compute_metrics` (jieba +
//! rouge_chinese + NLTK BLEU-4 with method3 smoothing): on the fixture's pairs, on the extra
//! pairs of `tests/fixtures/metrics_cases.json` (computed by Python, see its `generator`), and
//! in how the corpus is averaged; empty predictions and mismatched lists are handled.

use std::path::PathBuf;

use glmtune_engine::metrics::{self, score_corpus, score_pair, MetricsError, Scores};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn number(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

/// A float written as a Python `repr` string: parsed exactly, unlike a JSON number.
fn exact(value: &Value) -> f64 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a float string: {value}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

fn keyed(scores: &Scores) -> [(&'static str, f64); 4] {
    [
        ("bleu-4", scores.bleu_4),
        ("rouge-1", scores.rouge_1),
        ("rouge-2", scores.rouge_2),
        ("rouge-l", scores.rouge_l),
    ]
}

/// The official per-pair numbers of the model fixture, to 4 decimals, and their mean.
#[test]
fn fixture_pairs_match_official_compute_metrics() {
    let cases = read_json(fixtures().join("chatglm6b-tiny/expected.json"))["metrics"].clone();
    let cases = cases.as_array().expect("metrics[]");
    let predictions: Vec<String> = cases
        .iter()
        .map(|c| c["pred"].as_str().expect("pred").to_owned())
        .collect();
    let references: Vec<String> = cases
        .iter()
        .map(|c| c["label"].as_str().expect("label").to_owned())
        .collect();
    let (mean, per_example, warnings) = score_corpus(&predictions, &references).expect("scores");
    assert!(warnings.is_empty(), "{warnings:?}");
    let mut sums = [0.0; 4];
    for (case, scores) in cases.iter().zip(&per_example) {
        for (i, (key, value)) in keyed(scores).into_iter().enumerate() {
            let official = number(case, key);
            // Exact to the 4 decimals printed (the brief allows 0.05).
            assert!(
                (value - official).abs() < 1e-9,
                "{key} of {case}: {value} vs {official}"
            );
            sums[i] += official;
        }
    }
    for ((key, value), sum) in keyed(&mean).into_iter().zip(sums) {
        let official = sum / cases.len() as f64;
        assert!(
            (value - official).abs() < 1e-4,
            "mean {key}: {value} vs {official}"
        );
    }
}

/// Pairs covering sentence ends, quotes, ellipses, whitespace, repeats, mixed scripts.
#[test]
fn python_cases_match_unrounded_and_rounded() {
    let doc = read_json(fixtures().join("metrics_cases.json"));
    let cases = doc["cases"].as_array().expect("cases[]");
    assert!(cases.len() >= 40);
    for case in cases {
        let prediction = case["pred"].as_str().expect("pred");
        let reference = case["label"].as_str().expect("label");
        let scores = score_pair(prediction, reference);
        let (_, rounded, warnings) =
            score_corpus(&[prediction.to_owned()], &[reference.to_owned()]).expect("one pair");
        assert!(warnings.is_empty(), "{warnings:?}");
        for ((key, value), (_, value_rounded)) in keyed(&scores).into_iter().zip(keyed(&rounded[0]))
        {
            let official = number(case, key);
            assert!(
                (value - official).abs() < 1e-9,
                "{key} of {prediction:?} / {reference:?}: {value} vs {official}"
            );
            let official_rounded = number(case, &format!("{key}_rounded"));
            assert!(
                (value_rounded - official_rounded).abs() < 1e-9,
                "rounded {key} of {prediction:?}"
            );
        }
    }
}

/// jieba-rs cuts the texts like Python's `jieba.cut(text)` (default mode, HMM on).
#[test]
fn segmentation_matches_python_jieba() {
    let doc = read_json(fixtures().join("metrics_cases.json"));
    let mut pairs: Vec<(String, Vec<String>)> = Vec::new();
    for case in doc["cases"].as_array().expect("cases[]") {
        for (text, words) in [("pred", "pred_words"), ("label", "label_words")] {
            pairs.push((
                case[text].as_str().expect("text").to_owned(),
                strings(&case[words]),
            ));
        }
    }
    for case in doc["segmentation"].as_array().expect("segmentation[]") {
        pairs.push((
            case["text"].as_str().expect("text").to_owned(),
            strings(&case["words"]),
        ));
    }
    assert!(pairs.len() > 100);
    let differences: Vec<String> = pairs
        .iter()
        .filter(|(text, words)| metrics::segment::cut(text) != *words)
        .map(|(text, words)| {
            format!(
                "{text:?}: jieba-rs {:?}, Python {words:?}",
                metrics::segment::cut(text)
            )
        })
        .collect();
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// The mean is summed as `np.mean` sums (bit for bit), then rounded as Python's `round`.
#[test]
fn corpus_mean_sums_like_numpy() {
    let doc = read_json(fixtures().join("metrics_cases.json"));
    for case in doc["numpy_mean"].as_array().expect("numpy_mean[]") {
        let values: Vec<f64> = case["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(exact)
            .collect();
        let mean = metrics::numpy_mean(&values);
        assert_eq!(mean, exact(&case["mean"]), "{} values", values.len());
        assert_eq!(metrics::round4(mean), exact(&case["mean_rounded"]));
    }
}

#[test]
fn round4_is_pythons_round() {
    // Exact binary ties go to the even digit; everything else to the nearest.
    assert_eq!(metrics::round4(0.03125), 0.0312);
    assert_eq!(metrics::round4(0.09375), 0.0938);
    assert_eq!(metrics::round4(66.66666666), 66.6667);
    assert_eq!(metrics::round4(0.0), 0.0);
}

#[test]
fn empty_prediction_scores_zero_with_warning() {
    let predictions = vec![
        "".to_owned(),
        "多喝水，注意休息。".to_owned(),
        " \t".to_owned(),
    ];
    let references = vec![
        "多喝水。".to_owned(),
        "多喝水，注意休息。".to_owned(),
        "好".to_owned(),
    ];
    let (mean, per_example, warnings) = score_corpus(&predictions, &references).expect("scores");
    assert_eq!(per_example[0], Scores::default());
    assert_eq!(per_example[2], Scores::default());
    assert_eq!(score_pair("", "多喝水。"), Scores::default());
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("example 1: empty prediction"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1].starts_with("example 3: empty prediction"),
        "{}",
        warnings[1]
    );
    // The identical pair scores 100 (rouge_chinese's 1e-8 leaves 99.999999..., rounded to 100).
    assert_eq!(per_example[1].rouge_1, 100.0);
    assert!((mean.rouge_1 - 33.3333).abs() < 1e-9, "{mean:?}");
}

#[test]
fn empty_reference_scores_zero_with_warning() {
    let (_, per_example, warnings) =
        score_corpus(&["好".to_owned()], &["".to_owned()]).expect("scores");
    assert_eq!(per_example[0], Scores::default());
    assert!(warnings[0].contains("empty reference"), "{warnings:?}");
}

#[test]
fn mismatched_or_empty_lists_are_errors() {
    let error = score_corpus(&["a".to_owned(), "b".to_owned()], &["a".to_owned()]).unwrap_err();
    assert!(
        matches!(
            error,
            MetricsError::LengthMismatch {
                predictions: 2,
                references: 1
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("2 predictions but 1 references"),
        "{error}"
    );
    assert!(matches!(
        score_corpus(&[], &[]),
        Err(MetricsError::NoExamples)
    ));
}

#[test]
fn scores_serialize_with_official_keys() {
    let json = serde_json::to_value(Scores {
        bleu_4: 1.0,
        rouge_1: 2.0,
        rouge_2: 3.0,
        rouge_l: 4.0,
    })
    .expect("json");
    assert_eq!(
        json,
        serde_json::json!({"bleu-4": 1.0, "rouge-1": 2.0, "rouge-2": 3.0, "rouge-l": 4.0})
    );
}

/// The segmenter is built once: a dictionary offered after the first cut is refused, not
/// silently ignored; a malformed one is reported.
#[test]
fn dictionary_is_fixed_once_in_use() {
    metrics::segment::cut("测试");
    let mut dictionary = std::io::Cursor::new("测试 10 n\n");
    let error = metrics::install_dictionary(&mut dictionary).unwrap_err();
    assert!(
        matches!(error, MetricsError::DictionaryAlreadySet),
        "{error}"
    );
    let mut malformed = std::io::Cursor::new("测试 ten n\n");
    let error = metrics::install_dictionary(&mut malformed).unwrap_err();
    assert!(matches!(error, MetricsError::Dictionary(_)), "{error}");
}
