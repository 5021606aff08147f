//! A checkpoint folder with a `tokenizer.json` is read from it (its own normalizer, model and
//! decoder) rather than from a sentencepiece model, under the same ChatGLM layers.

use std::path::PathBuf;

use glmtune_engine::tokenizer::{ChatGlmTokenizer, Family, TokenizerError, JSON_FILE};
use tokenizers::decoders::metaspace::{Metaspace, PrependScheme};
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace, Sequence};
use tokenizers::{AddedToken, Tokenizer};

/// A fresh empty folder under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glmtune-tokjson-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A ChatGLM2/3-style vocabulary (no `[gMASK]` piece) as a Unigram `tokenizer.json`.
fn tiny_json() -> String {
    let vocab = [
        ("<unk>", 0.0),
        ("<s>", 0.0),
        ("</s>", 0.0),
        ("▁", -2.0),
        ("h", -3.0),
        ("i", -3.0),
        ("▁hi", -1.0),
    ];
    let vocab = vocab.iter().map(|&(p, s)| (p.to_string(), s)).collect();
    let mut tokenizer = Tokenizer::new(Unigram::from(vocab, Some(0), false).unwrap());
    let normalizer = Sequence::new(vec![
        NormalizerWrapper::Prepend(Prepend::new("▁".into())),
        NormalizerWrapper::Replace(Replace::new(" ", "▁").unwrap()),
    ]);
    tokenizer.with_normalizer(Some(normalizer)).unwrap();
    tokenizer.with_decoder(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    tokenizer
        .add_special_tokens([
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
        ])
        .unwrap();
    tokenizer.to_string(false).unwrap()
}

#[test]
fn folder_with_tokenizer_json_needs_no_sentencepiece_model() {
    let dir = scratch("tiny");
    std::fs::write(dir.join(JSON_FILE), tiny_json()).unwrap();
    let tok = ChatGlmTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.family(), Family::ChatGlm3);
    assert_eq!(tok.encode_plain("hi hi"), [6, 6]);
    // ChatGLM3's special tokens follow the 7 pieces: [MASK] [gMASK] [sMASK] sop eop, roles.
    assert_eq!(tok.encode("hi"), [8, 10, 6]);
    assert_eq!(tok.special_ids().eos, 2);
    assert_eq!(tok.vocab_size(), 7 + 9);
    // `</s>` decodes to nothing, special names to themselves.
    assert_eq!(tok.decode(&[6, 6, 2]), "hi hi");
    assert_eq!(tok.decode(&[8, 6]), "[gMASK] hi");
    assert_eq!(tok.token_to_id("▁hi"), Some(6));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broken_tokenizer_json_names_the_file() {
    let dir = scratch("broken");
    std::fs::write(dir.join(JSON_FILE), "{\"model\": 5}").unwrap();
    let err = ChatGlmTokenizer::from_dir(&dir).unwrap_err();
    assert!(
        matches!(err, TokenizerError::MalformedModel { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(JSON_FILE), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
