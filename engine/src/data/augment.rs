//! Rule-based data augmentation for Chinese (and mixed) prompts, without a teacher: new prompts
//! made from a record's own words — jieba's words, as ROUGE cuts them — by random deletion, swap,
//! insertion of a word of the same record, or punctuation inserted between words (EDA and AEDA's
//! operations, on words rather than whitespace tokens). The answer is kept.
//!
//! Every new prompt is checked before it is kept: one whose character-3-gram MinHash signature is
//! as similar as `threshold` to its own parent's, to another record's, or to a record already kept
//! is a near-duplicate and dropped; one as similar to a validation prompt would leak the
//! validation set into training and is dropped too. Everything is seeded: the same records,
//! options and seed give the same records.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

pub use super::near_duplicates::{MinHash, NearDuplicates, Signature, Verdict};
use super::Record;
use crate::metrics::segment::cut;

/// An operation on a prompt's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Each word dropped with probability `rate` (at least one kept).
    Delete,
    /// `rate · words` (at least 1) swaps of two words.
    Swap,
    /// `rate · words` (at least 1) words of the same record inserted at random places.
    Insert,
    /// `rate · words` (at least 1) punctuation marks inserted between words.
    Punctuation,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Delete,
        Method::Swap,
        Method::Insert,
        Method::Punctuation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Delete => "delete",
            Method::Swap => "swap",
            Method::Insert => "insert",
            Method::Punctuation => "punctuation",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Method::ALL.map(Method::as_str).to_vec();
                format!("unknown augmentation {text:?} ({})", names.join(", "))
            })
    }
}

/// What to make and how alike is too alike.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentOptions {
    pub methods: Vec<Method>,
    /// New prompts per record and method.
    pub copies: usize,
    /// The share of words an operation touches.
    pub rate: f64,
    pub seed: u64,
    /// Estimated Jaccard similarity of character 3-grams at which two prompts are the same.
    pub threshold: f64,
}

impl Default for AugmentOptions {
    fn default() -> Self {
        AugmentOptions {
            methods: Method::ALL.to_vec(),
            copies: 1,
            rate: 0.1,
            seed: 42,
            threshold: 0.9,
        }
    }
}

/// A new record's origin, written beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The record it was made from: its number (from 1) in the parent dataset.
    pub parent: usize,
    pub method: Method,
    /// Which of the parent's copies by this method (from 1).
    pub copy: usize,
    pub seed: u64,
}

/// A kept new record: the parent's answer and history, a new prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Augmented {
    pub prompt: String,
    pub provenance: Provenance,
}

/// What an augmentation made and why some of it was dropped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Augmentation {
    pub kept: Vec<Augmented>,
    /// Near-duplicates of a record of the parent or of one kept before.
    pub dropped_duplicates: usize,
    /// Near-duplicates of a validation prompt.
    pub dropped_leaking: usize,
    /// Kept per method.
    pub by_method: HashMap<Method, usize>,
}

/// New prompts for `records`, none a near-duplicate of the parent, of each other or of
/// `validation`'s prompts.
pub fn augment(
    records: &[Record],
    validation: &[Record],
    options: &AugmentOptions,
) -> Augmentation {
    let mut novelty = NearDuplicates::new(
        options.seed,
        options.threshold,
        records.iter().map(|r| r.prompt.as_str()),
        validation.iter().map(|r| r.prompt.as_str()),
    );
    let mut out = Augmentation::default();
    for (index, record) in records.iter().enumerate() {
        let words: Vec<&str> = cut(&record.prompt);
        // Words to insert come from the whole record: its prompt and its answer.
        let mut pool = words.clone();
        pool.extend(cut(&record.response));
        pool.retain(|w| !w.trim().is_empty());
        for &method in &options.methods {
            for copy in 1..=options.copies {
                // Each (record, method, copy) draws from its own stream: adding a method or a
                // copy does not change the others.
                let mut rng = Rng::new(
                    options.seed
                        ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        ^ (method as u64 + 1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
                        ^ (copy as u64).wrapping_mul(0x1656_67B1_9E37_79F9),
                );
                let prompt = apply(method, &words, &pool, options.rate, &mut rng);
                match novelty.admit(&prompt) {
                    Verdict::Leaking => out.dropped_leaking += 1,
                    Verdict::Duplicate => out.dropped_duplicates += 1,
                    Verdict::New => {
                        *out.by_method.entry(method).or_default() += 1;
                        out.kept.push(Augmented {
                            prompt,
                            provenance: Provenance {
                                parent: index + 1,
                                method,
                                copy,
                                seed: options.seed,
                            },
                        });
                    }
                }
            }
        }
    }
    out
}

/// A record as a new version's file holds it: the `prompt`/`response` (and `history`) columns, or
/// the `messages` of a conversation; a new record also has its `provenance`.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<&'a [(String, String)]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<crate::generation::ChatMessage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<serde_json::Value>,
}

/// `record` as one line of a new version, with `prompt` (and `response`, when given) in place of
/// its own — in a conversation, the last user message (and the last assistant message) — and
/// `provenance` beside it. `with_history`: the dataset has a history column, so every record
/// keeps its `history` (empty ones too: a reader of that column needs it on every line).
pub fn record_line<P: Serialize>(
    record: &Record,
    prompt: &str,
    response: Option<&str>,
    provenance: Option<&P>,
    with_history: bool,
) -> String {
    // Plain strings and numbers: serializing cannot fail.
    let provenance = provenance.and_then(|p| serde_json::to_value(p).ok());
    let row = if record.messages.is_empty() {
        Row {
            prompt: Some(prompt),
            response: Some(response.unwrap_or(&record.response)),
            history: with_history.then_some(record.history.as_slice()),
            messages: None,
            provenance,
        }
    } else {
        use crate::tokenizer::Role;
        let mut messages = record.messages.clone();
        let mut set_last = |role: Role, text: &str| {
            if let Some(last) = messages.iter_mut().rev().find(|m| m.role == role) {
                last.content = text.to_owned();
            }
        };
        set_last(Role::User, prompt);
        if let Some(response) = response {
            set_last(Role::Assistant, response);
        }
        Row {
            prompt: None,
            response: None,
            history: None,
            messages: Some(messages),
            provenance,
        }
    };
    serde_json::to_string(&row).unwrap_or_default()
}

/// `record` as one line of a new version, unchanged and with no provenance: a parent's record
/// at the head of its version.
pub fn record_as_it_was(record: &Record, with_history: bool) -> String {
    record_line::<()>(record, &record.prompt, None, None, with_history)
}

/// The new version as JSON lines: `records` as they were, then the kept new ones. Conversations
/// (`messages`) stay conversations; the others get `prompt`/`response` columns, and `history`
/// when the parent has that column (`with_history`).
pub fn version_lines(records: &[Record], made: &Augmentation, with_history: bool) -> String {
    let mut text = String::new();
    for record in records {
        text.push_str(&record_as_it_was(record, with_history));
        text.push('\n');
    }
    for kept in &made.kept {
        let parent = &records[kept.provenance.parent - 1];
        text.push_str(&record_line(
            parent,
            &kept.prompt,
            None,
            Some(&kept.provenance),
            with_history,
        ));
        text.push('\n');
    }
    text
}

/// Full-width marks for Chinese text (AEDA inserts a language's own punctuation).
const MARKS: [&str; 6] = ["，", "。", "！", "？", "；", "："];

fn apply(method: Method, words: &[&str], pool: &[&str], rate: f64, rng: &mut Rng) -> String {
    let mut out: Vec<&str> = words.to_vec();
    let times = ((words.len() as f64 * rate).round() as usize).max(1);
    match method {
        Method::Delete => {
            let kept: Vec<&str> = words
                .iter()
                .copied()
                .filter(|_| rng.unit() >= rate)
                .collect();
            out = if kept.is_empty() && !words.is_empty() {
                vec![words[rng.below(words.len())]]
            } else {
                kept
            };
        }
        Method::Swap => {
            for _ in 0..times {
                if out.len() < 2 {
                    break;
                }
                let (a, b) = (rng.below(out.len()), rng.below(out.len()));
                out.swap(a, b);
            }
        }
        Method::Insert => {
            for _ in 0..times {
                if pool.is_empty() {
                    break;
                }
                let word = pool[rng.below(pool.len())];
                out.insert(rng.below(out.len() + 1), word);
            }
        }
        Method::Punctuation => {
            for _ in 0..times {
                let mark = MARKS[rng.below(MARKS.len())];
                out.insert(rng.below(out.len() + 1), mark);
            }
        }
    }
    out.concat()
}

/// splitmix64: a tiny seeded generator, so the same seed gives the same records everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(prompt: &str, response: &str) -> Record {
        Record {
            prompt: prompt.into(),
            response: response.into(),
            history: Vec::new(),
            messages: Vec::new(),
        }
    }

    #[test]
    fn methods_keep_the_answer_drop_near_duplicates_and_leaks_and_are_seeded() {
        let records = vec![
            record(
                "高血压患者日常饮食应该注意什么问题呢",
                "少盐少油，多吃蔬菜水果。",
            ),
            record(
                "糖尿病患者可以吃水果吗，哪些比较合适",
                "可以适量吃低糖水果，如苹果。",
            ),
            // A copy of the first: every new prompt of it is a near-duplicate of the first's.
            record(
                "高血压患者日常饮食应该注意什么问题呢",
                "少盐少油，多吃蔬菜水果。",
            ),
        ];
        // The second record's prompt is also a validation prompt: what is made of it leaks.
        let validation = vec![record("糖尿病患者可以吃水果吗，哪些比较合适", "适量。")];
        let options = AugmentOptions {
            copies: 2,
            threshold: 0.7,
            ..AugmentOptions::default()
        };
        let made = augment(&records, &validation, &options);
        assert_eq!(made, augment(&records, &validation, &options), "seeded");
        let total = 3 * Method::ALL.len() * 2;
        assert_eq!(
            made.kept.len() + made.dropped_duplicates + made.dropped_leaking,
            total
        );
        assert!(
            !made.kept.is_empty() && made.dropped_duplicates > 0,
            "{made:?}"
        );
        assert!(made.dropped_leaking > 0, "{made:?}");
        let hasher = MinHash::new(options.seed);
        let signatures: Vec<Signature> = made
            .kept
            .iter()
            .map(|k| hasher.signature(&k.prompt))
            .collect();
        for (i, a) in signatures.iter().enumerate() {
            for b in &signatures[..i] {
                assert!(MinHash::similarity(a, b) < 0.7, "two kept prompts alike");
            }
        }
        for kept in &made.kept {
            let parent = &records[kept.provenance.parent - 1];
            assert_ne!(kept.prompt, parent.prompt);
            let s = hasher.signature(&kept.prompt);
            for other in records.iter().chain(&validation) {
                assert!(MinHash::similarity(&s, &hasher.signature(&other.prompt)) < 0.7);
            }
        }
        // The methods do what they say, on words.
        let words = ["高血压", "患者", "饮食"];
        let mut rng = Rng::new(1);
        let swapped = apply(Method::Swap, &words, &words, 1.0, &mut rng);
        let mut sorted: Vec<char> = swapped.chars().collect();
        sorted.sort_unstable();
        let mut original: Vec<char> = words.concat().chars().collect();
        original.sort_unstable();
        assert_eq!(sorted, original, "a swap moves words, adds none");
        let marked = apply(Method::Punctuation, &words, &words, 0.34, &mut rng);
        assert_eq!(marked.chars().count(), words.concat().chars().count() + 1);
        let fewer = apply(Method::Delete, &words, &words, 0.5, &mut rng);
        assert!(fewer.chars().count() < words.concat().chars().count());
    }
}
