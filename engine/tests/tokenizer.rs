//! The Rust ChatGLM-6B tokenizer against THUDM's `tokenization_chatglm.py` (transformers 4.33,
//! sentencepiece 0.2): the fixture's cases, extra edge cases computed with the official code
//! (embedded below, so no Python is needed), and broken inputs that must fail cleanly.
//!
//! Past 500 lines on purpose: most of it is the reference cases computed with the official code,
//! embedded so that no Python is needed.

use std::path::{Path, PathBuf};

use glmtune_engine::tokenizer::{ChatGlmTokenizer, SpecialIds, TokenizerError};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chatglm6b-tiny")
}

fn model_dir() -> PathBuf {
    fixture_dir().join("model")
}

fn read_json(name: &str) -> Value {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn tokenizer() -> ChatGlmTokenizer {
    ChatGlmTokenizer::from_dir(&model_dir()).unwrap()
}

fn model_bytes() -> Vec<u8> {
    std::fs::read(model_dir().join("ice_text.model")).unwrap()
}

fn config_text() -> String {
    std::fs::read_to_string(model_dir().join("tokenizer_config.json")).unwrap()
}

/// The fixture's config with one key replaced.
fn config_with(key: &str, value_json: &str) -> String {
    let mut cfg: Value = serde_json::from_str(&config_text()).unwrap();
    cfg[key] = serde_json::from_str(value_json).unwrap();
    cfg.to_string()
}

// Computed with the official tokenizer on the fixture model: (text, tokenizer(text)["input_ids"],
// tokenizer.decode(those ids)).
const EXTRA_CASES: &[(&str, &[u32], &str)] = &[
    ("", &[5, 8], "[gMASK]<sop>"),
    (" ", &[349, 349, 5, 8], " [gMASK]<sop>"),
    (" x", &[349, 349, 422, 5, 8], " x[gMASK]<sop>"),
    ("x ", &[349, 422, 349, 5, 8], "x [gMASK]<sop>"),
    ("   leading", &[349, 15, 426, 404, 429, 425, 417, 196, 5, 8], "   leading[gMASK]<sop>"),
    ("trailing   ", &[434, 436, 429, 432, 426, 417, 196, 15, 5, 8], "trailing   [gMASK]<sop>"),
    ("                                                                                 ", &[349, 92, 349, 5, 8], "                                                                                 [gMASK]<sop>"),
    ("                                                                                                                                                                ", &[349, 92, 92, 5, 8], "                                                                                                                                                                [gMASK]<sop>"),
    ("                                                                                                                                                                 x", &[349, 92, 92, 349, 422, 5, 8], "                                                                                                                                                                 x[gMASK]<sop>"),
    ("a\t\tb", &[433, 13, 13, 453, 5, 8], "a\t\tb[gMASK]<sop>"),
    ("\n\n", &[349, 12, 12, 5, 8], "\n\n[gMASK]<sop>"),
    ("line1\r\nline2", &[349, 426, 417, 404, 420, 349, 12, 426, 417, 404, 421, 5, 8], "line1 \nline2[gMASK]<sop>"),
    ("<sop>", &[8, 5, 8], "<sop>[gMASK]<sop>"),
    ("x <sop> y", &[349, 422, 8, 349, 406, 5, 8], "x<sop> y[gMASK]<sop>"),
    ("[MASK] hello [gMASK]", &[4, 349, 438, 404, 426, 426, 427, 349, 5, 5, 8], "[MASK] hello [gMASK][gMASK]<sop>"),
    ("<pad><unk><eop>", &[3, 0, 9, 5, 8], " \u{2047} <eop>[gMASK]<sop>"),
    ("\n<eop>\n", &[9, 5, 8], "<eop>[gMASK]<sop>"),
    ("<SOP>", &[349, 153, 176, 172, 173, 155, 5, 8], "<SOP>[gMASK]<sop>"),
    ("[gMASK][sMASK]", &[349, 5, 6, 5, 8], "[gMASK][sMASK][gMASK]<sop>"),
    ("<image_5>", &[349, 153, 432, 457, 429, 196, 404, 188, 146, 155, 5, 8], "<image_5>[gMASK]<sop>"),
    ("<n>", &[349, 12, 5, 8], "\n[gMASK]<sop>"),
    ("<|blank_3|>", &[349, 15, 5, 8], "   [gMASK]<sop>"),
    ("<|tab|>", &[349, 13, 5, 8], "\t[gMASK]<sop>"),
    ("▁▁x", &[349, 349, 349, 422, 5, 8], "  x[gMASK]<sop>"),
    ("Ｈｅｌｌｏ，ｗｏｒｌｄ！", &[349, 165, 404, 426, 426, 427, 352, 440, 431, 426, 425, 126, 5, 8], "Hello,world![gMASK]<sop>"),
    ("①②③", &[349, 420, 421, 144, 5, 8], "123[gMASK]<sop>"),
    ("ﬁ", &[349, 454, 432, 5, 8], "fi[gMASK]<sop>"),
    ("ｶﾀｶﾅ", &[349, 320, 223, 264, 320, 223, 284, 320, 223, 264, 320, 224, 231, 5, 8], "カタカナ[gMASK]<sop>"),
    ("e\u{301}", &[349, 288, 262, 5, 8], "é[gMASK]<sop>"),
    ("\u{3000}x\u{3000}", &[349, 349, 422, 349, 5, 8], " x [gMASK]<sop>"),
    ("\u{200b}", &[349, 349, 5, 8], " [gMASK]<sop>"),
    ("\u{feff}", &[349, 349, 5, 8], " [gMASK]<sop>"),
    ("a\u{0}b", &[433, 93, 453, 5, 8], "a\u{0}b[gMASK]<sop>"),
    ("\u{1c}", &[349, 5, 8], "[gMASK]<sop>"),
    ("\u{a0}\u{85}", &[349, 349, 287, 226, 5, 8], " \u{85}[gMASK]<sop>"),
    ("😀👍🏽", &[349, 333, 252, 245, 221, 333, 252, 238, 234, 333, 252, 236, 282, 5, 8], "😀👍🏽[gMASK]<sop>"),
    ("糖尿病患者应该多喝水", &[349, 415, 391, 5, 8], "糖尿病患者应该多喝水[gMASK]<sop>"),
    ("问：我失眠了怎么办？\n答：", &[349, 383, 350, 509, 402, 321, 279, 227, 378, 354, 374, 353, 12, 370, 350, 5, 8], "问:我失眠了怎么办?\n答:[gMASK]<sop>"),
    ("don't it's", &[448, 427, 458, 132, 428, 349, 432, 428, 132, 435, 5, 8], "don't it's[gMASK]<sop>"),
    ("a . b ? c !", &[433, 349, 437, 349, 453, 349, 353, 349, 418, 349, 126, 5, 8], "a. b? c![gMASK]<sop>"),
    ("Drink  more\twater.\n\n  Rest!", &[349, 451, 436, 417, 439, 14, 457, 431, 404, 13, 440, 442, 444, 437, 12, 12, 14, 175, 404, 435, 428, 126, 5, 8], "Drink  more\twater.\n\n  Rest![gMASK]<sop>"),
];
const DECODE_CASES: &[(&[u32], &str)] = &[
    (&[], ""),
    (&[3, 3], ""),
    (&[330], "\u{fffd}"),
    (&[321, 282], "\u{fffd}\u{fffd}"),
    (&[0], " \u{2047} "),
    (&[1, 2], ""),
    (&[349, 349, 422], " x"),
    (&[333, 252, 245], "\u{fffd}\u{fffd}\u{fffd}"),
    (
        &[4, 5, 6, 7, 8, 9, 10, 11],
        "[MASK][gMASK][sMASK]<unused_0><sop><eop><ENC><dBLOCK>",
    ),
    (
        &[12, 13, 14, 92],
        "\n\t                                                                                  ",
    ),
    (&[321, 349, 426], "\u{fffd} l"),
    (&[349, 437, 349, 353, 349, 126], ".?!"),
    (&[3, 349, 3, 422, 3], "x"),
    (&[511, 0, 93, 103], "应 \u{2047} \u{0}\n"),
    (&[135, 349, 132, 435], "*'s"),
];
const VARIANT_CASES: &[(&str, &str, &str, &[u32], &str)] = &[
    (
        "num_image_tokens",
        "20",
        "Hello World <SOP> [MASK]",
        &[
            369, 185, 424, 446, 446, 447, 369, 200, 451, 446, 445, 369, 173, 196, 192, 193, 175,
            24, 25, 28,
        ],
        "Hello World <SOP>[MASK][gMASK]<sop>",
    ),
    (
        "num_image_tokens",
        "20",
        "  two  spaces \t and\nnew line  ",
        &[
            369, 34, 448, 460, 447, 34, 455, 476, 449, 438, 424, 455, 369, 33, 453, 466, 32, 478,
            424, 460, 369, 446, 437, 424, 34, 25, 28,
        ],
        "  two  spaces \t and\nnew line  [gMASK]<sop>",
    ),
    (
        "num_image_tokens",
        "20",
        "ΣΑΣ İ Straße",
        &[
            369, 319, 276, 319, 258, 319, 276, 369, 309, 289, 369, 196, 448, 456, 449, 308, 272,
            424, 25, 28,
        ],
        "ΣΑΣ İ Straße[gMASK]<sop>",
    ),
    (
        "num_image_tokens",
        "20",
        "x<eop> <image_5> y",
        &[
            369, 442, 29, 369, 173, 452, 477, 449, 216, 424, 208, 166, 175, 369, 426, 25, 28,
        ],
        "x<eop> <image_5> y[gMASK]<sop>",
    ),
    (
        "do_lower_case",
        "true",
        "Hello World <SOP> [MASK]",
        &[
            349, 438, 404, 426, 426, 427, 349, 440, 431, 426, 425, 8, 4, 5, 8,
        ],
        "hello world<sop>[MASK][gMASK]<sop>",
    ),
    (
        "do_lower_case",
        "true",
        "  two  spaces \t and\nnew line  ",
        &[
            349, 14, 428, 440, 427, 14, 435, 456, 429, 418, 404, 435, 349, 13, 433, 446, 12, 458,
            404, 440, 349, 426, 417, 404, 14, 5, 8,
        ],
        "  two  spaces \t and\nnew line  [gMASK]<sop>",
    ),
    (
        "do_lower_case",
        "true",
        "ΣΑΣ İ Straße",
        &[
            349, 300, 224, 299, 270, 300, 224, 349, 432, 297, 228, 447, 428, 436, 429, 288, 252,
            404, 5, 8,
        ],
        "σασ i̇ straße[gMASK]<sop>",
    ),
    (
        "do_lower_case",
        "true",
        "x<eop> <image_5> y",
        &[
            349, 422, 9, 349, 153, 432, 457, 429, 196, 404, 188, 146, 155, 349, 406, 5, 8,
        ],
        "x<eop> <image_5> y[gMASK]<sop>",
    ),
    (
        "remove_space",
        "true",
        "Hello World <SOP> [MASK]",
        &[
            349, 165, 404, 426, 426, 427, 349, 180, 431, 426, 425, 349, 153, 176, 172, 173, 155, 4,
            5, 8,
        ],
        "Hello World <SOP>[MASK][gMASK]<sop>",
    ),
    (
        "remove_space",
        "true",
        "  two  spaces \t and\nnew line  ",
        &[
            434, 440, 427, 447, 456, 429, 418, 404, 435, 433, 446, 349, 458, 404, 440, 349, 426,
            417, 404, 5, 8,
        ],
        "two spaces and new line[gMASK]<sop>",
    ),
    (
        "remove_space",
        "true",
        "ΣΑΣ İ Straße",
        &[
            349, 299, 256, 299, 238, 299, 256, 349, 289, 269, 349, 176, 428, 436, 429, 288, 252,
            404, 5, 8,
        ],
        "ΣΑΣ İ Straße[gMASK]<sop>",
    ),
    (
        "remove_space",
        "true",
        "x<eop> <image_5> y",
        &[
            349, 422, 9, 349, 153, 432, 457, 429, 196, 404, 188, 146, 155, 349, 406, 5, 8,
        ],
        "x<eop> <image_5> y[gMASK]<sop>",
    ),
];

#[test]
fn tokenizer_cases_match_official_ids_and_text() {
    let tok = tokenizer();
    let cases = read_json("tokenizer_cases.json");
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let plain = ids(&case["plain_ids"]);
        assert_eq!(tok.encode(text), ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(tok.encode_plain(text), plain, "plain ids of {text:?}");
        // `decoded` is tokenizer.decode(plain_ids); the [gMASK] and <sop> pieces are
        // user-defined, so decoding the full ids shows them literally.
        let decoded = case["decoded"].as_str().unwrap();
        assert_eq!(tok.decode(&plain), decoded, "decode of {text:?}");
        assert_eq!(
            tok.decode(&ids(&case["ids"])),
            format!("{decoded}[gMASK]<sop>")
        );
    }
}

#[test]
fn expected_cases_match_official_ids_and_decoding() {
    let tok = tokenizer();
    let expected = read_json("expected.json");
    let cases = expected["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text), ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(
            tok.encode_plain(text),
            ids(&case["plain_ids"]),
            "plain ids of {text:?}"
        );
        if let Some(want) = case.get("decoded_greedy_base").and_then(Value::as_str) {
            assert_eq!(
                tok.decode(&ids(&case["greedy_base"])),
                want,
                "greedy decode for {text:?}"
            );
        }
    }
    assert_eq!(
        tok.vocab_size() as u64,
        expected["vocab_size"].as_u64().unwrap()
    );
}

#[test]
fn special_ids_match_fixture() {
    let tok = tokenizer();
    let expected = read_json("expected.json");
    let sp = &expected["special_ids"];
    let id = |k: &str| sp[k].as_u64().unwrap() as u32;
    let s = tok.special_ids();
    assert_eq!(
        s,
        SpecialIds {
            mask: id("[MASK]"),
            gmask: id("[gMASK]"),
            smask: 6,
            bos: id("<sop>"),
            eos: id("<eop>"),
            pad: id("<pad>"),
            unk: 0,
        }
    );
    assert_eq!(tok.token_to_id("[gMASK]"), Some(s.gmask));
    assert_eq!(tok.token_to_id("<|blank_80|>"), Some(92));
    assert_eq!(tok.token_to_id("<0xE4>"), Some(321));
    assert_eq!(tok.token_to_id("no such piece"), None);
    assert_eq!(tok.id_to_token(12), Some("<n>"));
    assert_eq!(tok.id_to_token(349), Some("\u{2581}"));
    assert_eq!(tok.id_to_token(512), None);
}

#[test]
fn extra_cases_match_official() {
    let tok = tokenizer();
    for &(text, want_ids, want_text) in EXTRA_CASES {
        assert_eq!(tok.encode(text), want_ids, "ids of {text:?}");
        assert_eq!(
            tok.encode_plain(text),
            want_ids[..want_ids.len() - 2],
            "plain ids of {text:?}"
        );
        assert_eq!(tok.decode(want_ids), want_text, "decode of {text:?}");
    }
    for &(ids, want) in DECODE_CASES {
        assert_eq!(tok.decode(ids), want, "decode of {ids:?}");
    }
    // Ids past the vocabulary make Python raise; here they are skipped.
    assert_eq!(tok.decode(&[349, 422, 100_000]), "x");
}

#[test]
fn config_variants_match_official() {
    let model = model_bytes();
    for &(key, value, text, want_ids, want_text) in VARIANT_CASES {
        let tok = ChatGlmTokenizer::from_bytes(&model, Some(&config_with(key, value))).unwrap();
        assert_eq!(tok.encode(text), want_ids, "{key}={value}: ids of {text:?}");
        assert_eq!(
            tok.decode(want_ids),
            want_text,
            "{key}={value}: decode of {text:?}"
        );
    }
}

#[test]
fn image_token_offset() {
    let model = model_bytes();
    let tok =
        ChatGlmTokenizer::from_bytes(&model, Some(&config_with("num_image_tokens", "20"))).unwrap();
    assert_eq!(tok.vocab_size(), 532);
    assert_eq!(tok.special_ids().gmask, 25);
    assert_eq!(tok.token_to_id("<image_7>"), Some(7));
    assert_eq!(tok.id_to_token(7), None);
    assert_eq!(tok.id_to_token(32), Some("<n>"));
    // SPTokenizer.encode(text, add_dummy_prefix=False): "<n>" + text, first two ids dropped.
    assert_eq!(tok.sp_encode("hello", false), [458, 424, 446, 446, 447]);
    assert_eq!(tok.sp_encode("  x\ny", false), [34, 442, 32, 426]);
    assert_eq!(tok.sp_encode("hello", true), [369, 458, 424, 446, 446, 447]);
    assert_eq!(tok.decode(&[5, 369, 442]), "<image_5> x");

    // Without tokenizer_config.json the constructor default of 20000 applies.
    let tok = ChatGlmTokenizer::from_bytes(&model, None).unwrap();
    assert_eq!(tok.vocab_size(), 20512);
    assert_eq!(
        tok.encode("你好 x"),
        [20349, 20321, 20282, 20253, 20322, 20258, 20282, 20349, 20422, 20005, 20008]
    );
    assert_eq!(tok.decode(&tok.encode("你好 x")), "你好 x[gMASK]<sop>");
}

#[test]
fn special_tokens_from_config_follow_transformers() {
    // AddedToken objects strip only where they say; a special token missing from the
    // vocabulary is appended after it; `pad_token: null` stops <pad> being special.
    let config = r#"{"bos_token": "<sop>", "eos_token": {"__type": "AddedToken", "content": "<eop>",
        "lstrip": false, "rstrip": true}, "gmask_token": "[gMASK]", "mask_token": "<mymask>",
        "pad_token": null, "unk_token": "<unk>", "num_image_tokens": 0,
        "additional_special_tokens": ["[gMASK]",
            {"__type": "AddedToken", "content": "<sop>", "lstrip": true, "rstrip": false}]}"#;
    let tok = ChatGlmTokenizer::from_bytes(&model_bytes(), Some(config)).unwrap();
    let cases: [(&str, &[u32], &str); 4] = [
        (
            "a <sop> b",
            &[433, 8, 349, 349, 453, 5, 8],
            "a<sop>  b[gMASK]<sop>",
        ),
        (
            "x <eop> y",
            &[349, 422, 349, 9, 349, 406, 5, 8],
            "x <eop> y[gMASK]<sop>",
        ),
        (
            "m <mymask> n",
            &[430, 512, 349, 458, 5, 8],
            "m <mymask> n[gMASK]<sop>",
        ),
        (
            "p <pad> q",
            &[445, 349, 153, 456, 429, 425, 155, 349, 206, 5, 8],
            "p <pad> q[gMASK]<sop>",
        ),
    ];
    for (text, want_ids, want_text) in cases {
        assert_eq!(tok.encode(text), want_ids, "ids of {text:?}");
        assert_eq!(tok.decode(want_ids), want_text, "decode of {text:?}");
    }
    assert_eq!(tok.decode(&[349, 422, 512, 3, 349, 406]), "x <mymask> y");
    assert_eq!(tok.special_ids().mask, 512);
    assert_eq!(tok.token_to_id("<mymask>"), Some(512));
    assert_eq!(tok.id_to_token(512), Some("<mymask>"));
}

#[test]
fn from_bytes_equals_from_dir() {
    let a = tokenizer();
    let b = ChatGlmTokenizer::from_bytes(&model_bytes(), Some(&config_text())).unwrap();
    for &(text, _, _) in EXTRA_CASES {
        assert_eq!(a.encode(text), b.encode(text));
    }
    assert_eq!(a.special_ids(), b.special_ids());
}

/// A fresh empty folder under the system temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glmtune-tokenizer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn missing_model_file_names_the_path() {
    let dir = scratch("missing");
    let err = ChatGlmTokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join("ice_text.model").display().to_string()),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_file_is_optional_in_a_directory() {
    let dir = scratch("noconfig");
    std::fs::write(dir.join("ice_text.model"), model_bytes()).unwrap();
    let tok = ChatGlmTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.num_image_tokens(), 20000);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_or_garbage_model_is_an_error_not_a_panic() {
    let model = model_bytes();
    // Cut inside a piece, inside the trainer spec, inside the normalizer's rule blob, and
    // one byte short of the end: each leaves a length-delimited field unfinished.
    for cut in [1, 2, 5000, model.len() / 2, model.len() - 1] {
        let err = ChatGlmTokenizer::from_bytes(&model[..cut], None).unwrap_err();
        assert!(
            matches!(err, TokenizerError::MalformedModel { .. }),
            "cut {cut}: {err:?}"
        );
        assert!(err.to_string().contains("ice_text.model"), "{err}");
    }
    let err = ChatGlmTokenizer::from_bytes(&[], None).unwrap_err();
    assert!(err.to_string().contains("no pieces"), "{err}");
    // Every short prefix, and a few thousand random files: errors or tokenizers, never panics.
    for cut in 0..3000.min(model.len()) {
        let _ = ChatGlmTokenizer::from_bytes(&model[..cut], None);
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let len = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = ChatGlmTokenizer::from_bytes(&bytes, None);
        // Flipped bytes in a real model: must load or fail cleanly, and encode without panics.
        let mut broken = model.clone();
        for _ in 0..4 {
            let i = (next() % model.len() as u64) as usize;
            broken[i] = next() as u8;
        }
        if let Ok(tok) = ChatGlmTokenizer::from_bytes(&broken, None) {
            let ids = tok.encode("Hello  世界\n\t😀 <sop>");
            let _ = tok.decode(&ids);
        }
    }
    let err = ChatGlmTokenizer::from_bytes(b"this is not a sentencepiece model", None).unwrap_err();
    assert!(err.to_string().contains("ice_text.model"), "{err}");
}

#[test]
fn malformed_config_is_an_error_naming_the_file() {
    let model = model_bytes();
    for bad in [
        "{",
        "[]",
        r#"{"remove_space": "no"}"#,
        r#"{"num_image_tokens": -5}"#,
        r#"{"num_image_tokens": 1.5}"#,
        r#"{"bos_token": 8}"#,
        r#"{"eos_token": {"lstrip": true}}"#,
    ] {
        let err = ChatGlmTokenizer::from_bytes(&model, Some(bad)).unwrap_err();
        assert!(
            matches!(err, TokenizerError::MalformedConfig { .. }),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    }
    let dir = scratch("badconfig");
    std::fs::write(dir.join("ice_text.model"), &model).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"do_lower_case": 1}"#).unwrap();
    let err = ChatGlmTokenizer::from_dir(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join("tokenizer_config.json").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("do_lower_case"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}
