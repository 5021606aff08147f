//! The text side of a streamed answer: each generated id turned into the chunk a client is sent
//! (detokenized, cleaned up as the generation's `chat()` does, held back while it may still
//! change). Prints the mean time a token over the first and the last 100 of a 2,000-token answer,
//! for each tokenizer generation, two ways: the answer loop's [`AnswerStream`] (an incremental
//! detokenizer and clean-up: the ratio should stay near 1), and, as the baseline measured in the
//! same run, decoding and cleaning up every id so far again on each token (how the server, the CLI
//! and the browser streamed before it, whose time grows with the answer).
//!
//! `cargo bench -p glmtune-engine --bench streaming`

use std::path::Path;
use std::time::Instant;

use glmtune_engine::generation::{chat_format, AnswerStream};
use glmtune_engine::tokenizer::ChatGlmTokenizer;

const ANSWER_TOKENS: usize = 2000;
const WINDOW: usize = 100;

/// A long answer: Chinese and English prose, punctuation the clean-up rewrites, code and blank
/// runs, new lines.
fn answer_ids(tokenizer: &ChatGlmTokenizer) -> Vec<u32> {
    let text = "头痛的原因有很多,比如睡眠不足、压力过大:请注意休息!\n\
        If the pain lasts longer than three days, see a doctor; it may be a migraine?\n\
        ```python\ndef f(x):\n    return x * 2\n```\n\
        治疗方法包括：1. 充足睡眠；2. 适量运动；3. 必要时服药。\n";
    let mut ids = Vec::new();
    while ids.len() < ANSWER_TOKENS {
        ids.extend(tokenizer.encode_plain(text));
    }
    ids.truncate(ANSWER_TOKENS);
    ids
}

fn mean_us(times: &[f64]) -> f64 {
    times.iter().sum::<f64>() / times.len() as f64 * 1e6
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    for (name, dir) in [
        ("ChatGLM-6B", root.join("chatglm6b-tiny/model")),
        ("ChatGLM3", root.join("chatglm3-tiny/model")),
    ] {
        let tokenizer = match ChatGlmTokenizer::from_dir(&dir) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{name}: {e}");
                continue;
            }
        };
        let family = tokenizer.family();
        let ids = answer_ids(&tokenizer);

        let mut times = Vec::with_capacity(ids.len());
        let mut stream = AnswerStream::new(&tokenizer, &[]);
        let mut incremental = String::new();
        for &id in &ids {
            let started = Instant::now();
            if let Some(chunk) = stream.push(id) {
                incremental.push_str(&chunk);
            }
            times.push(started.elapsed().as_secs_f64());
        }
        let (text, rest) = stream.finish();
        incremental.push_str(rest.as_deref().unwrap_or_default());
        assert_eq!(
            incremental, text,
            "{name}: the streamed pieces are the answer"
        );
        report(name, "answer stream (incremental)", &times, &incremental);

        let format = chat_format(family);
        let mut times = Vec::with_capacity(ids.len());
        let mut sent = String::new();
        for end in 1..=ids.len() {
            let started = Instant::now();
            // The old way: everything so far decoded and cleaned up again, the new end sent.
            sent = format.response_text(&tokenizer.decode(&ids[..end]));
            times.push(started.elapsed().as_secs_f64());
        }
        report(name, "decode every id so far (baseline)", &times, &sent);
    }
}

fn report(name: &str, how: &str, times: &[f64], sent: &str) {
    let (first, last) = (
        mean_us(&times[..WINDOW]),
        mean_us(&times[times.len() - WINDOW..]),
    );
    println!(
        "{name}: {how}: first {WINDOW} tokens {first:.1} µs/token, last {WINDOW} {last:.1} µs/token ({:.2}×), {} chars sent",
        last / first,
        sent.chars().count()
    );
}
