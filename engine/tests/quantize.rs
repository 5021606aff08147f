//! `quantize_checkpoint` on the tiny fixture: the file's layout, the loaded model against the one
//! built while quantizing, and the quantization error (logits and perplexity) against f32.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{DType, Device, Tensor, D};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::quant::{quantize_checkpoint, Bits, EmbeddingFormat, QUANTIZED_FILE};
use glmtune_engine::ChatGlmConfig;

use common::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("glmtune-quantize-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Perplexity of each case's own tokens (position t predicts token t + 1), over every case.
fn perplexity(model: &ChatGlmModel, cases: &[Vec<u32>]) -> f64 {
    let (mut total, mut count) = (0f64, 0usize);
    for ids in cases {
        let logits = logits_of(model, None, ids);
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        for t in 0..ids.len() - 1 {
            let lp: f32 = log_probs
                .get(t)
                .unwrap()
                .get(ids[t + 1] as usize)
                .unwrap()
                .to_scalar()
                .unwrap();
            total -= lp as f64;
            count += 1;
        }
    }
    (total / count as f64).exp()
}

/// The largest relative logit error over every case, without and with the trained adapter.
fn worst_errors(quantized: &ChatGlmModel, reference: &ChatGlmModel) -> (f32, f32) {
    let adapter = |model: &ChatGlmModel| {
        PrefixEncoder::load_adapter(
            &fixture_dir().join("adapter_trained"),
            model.config(),
            &Device::Cpu,
        )
        .unwrap()
    };
    let (ours, theirs) = (adapter(quantized), adapter(reference));
    let mut worst = (0f32, 0f32);
    for ids in cases() {
        let base = relative_error(
            &logits_of(quantized, None, &ids),
            &logits_of(reference, None, &ids),
        );
        let tuned = relative_error(
            &logits_of(quantized, Some(&ours), &ids),
            &logits_of(reference, Some(&theirs), &ids),
        );
        worst = (worst.0.max(base), worst.1.max(tuned));
    }
    worst
}

/// RMS of the difference over RMS of the reference: the average-case companion of the max measure.
fn rms_error(actual: &Tensor, reference: &Tensor) -> f32 {
    let rms = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    rms(&(actual - reference).unwrap()) / rms(reference)
}

#[test]
fn quantized_folder_keeps_official_names_and_loads_as_built() {
    let reference =
        ChatGlmModel::load(&fixture_dir().join("model"), DType::F32, &Device::Cpu).unwrap();
    let reference_ppl = perplexity(&reference, &cases());
    let mut previous = 0f32;
    for bits in [Bits::Eight, Bits::Four] {
        let out = scratch(&format!("{bits:?}"));
        let (report, built) = quantize_checkpoint(
            &fixture_dir().join("model"),
            &out,
            bits,
            EmbeddingFormat::Q8,
        )
        .unwrap();
        eprintln!("{report}");

        // The file: official names, linear layers at the asked width, embeddings q8_0, norms f32.
        let mut file = std::fs::File::open(out.join(QUANTIZED_FILE)).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let format_of = |name: &str| content.tensor_infos[name].ggml_dtype;
        let linear = if bits == Bits::Eight {
            GgmlDType::Q8_0
        } else {
            GgmlDType::Q4_0
        };
        assert_eq!(
            format_of("transformer.layers.0.attention.query_key_value.weight"),
            linear
        );
        assert_eq!(
            format_of("transformer.layers.2.mlp.dense_4h_to_h.weight"),
            linear
        );
        assert_eq!(
            format_of("transformer.word_embeddings.weight"),
            GgmlDType::Q8_0
        );
        assert_eq!(
            format_of("transformer.final_layernorm.weight"),
            GgmlDType::F32
        );
        assert_eq!(
            format_of("transformer.layers.1.attention.dense.bias"),
            GgmlDType::F32
        );
        assert!(report.file_bytes < report.f32_bytes / 3, "{report}");
        assert!(out.join("ice_text.model").is_file() && out.join("config.json").is_file());

        // The folder loads as a model, and it is the one built while quantizing.
        let loaded = ChatGlmModel::load(&out, DType::F32, &Device::Cpu).unwrap();
        // The file's bytes (what a browser downloads) build the same model.
        let from_bytes = ChatGlmModel::from_quantized_bytes(
            loaded.config().clone(),
            QUANTIZED_FILE,
            std::fs::read(out.join(QUANTIZED_FILE)).unwrap(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        for ids in cases() {
            let expected = logits_of(&built, None, &ids);
            for model in [&loaded, &from_bytes] {
                let same = relative_error(&logits_of(model, None, &ids), &expected);
                assert_eq!(
                    same, 0.0,
                    "{bits:?}: a loaded model differs from the built one"
                );
            }
        }

        // The fixture's random weights are far from a trained model's scale (its f32 perplexity
        // is above the vocabulary size), so its errors are reported, and only ordered.
        let (base, tuned) = worst_errors(&loaded, &reference);
        let ratio = perplexity(&loaded, &cases()) / reference_ppl;
        eprintln!(
            "fixture {bits:?}: max logit error base {base:.2e}, with adapter {tuned:.2e}; perplexity ×{ratio:.4} of f32"
        );
        assert!(base > previous && tuned.is_finite() && ratio.is_finite());
        previous = base;
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Random weights at a trained model's scale (normal, std 0.02), a block-friendly width.
fn realistic_model() -> ChatGlmModel {
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("model/config.json")).unwrap(),
    )
    .unwrap();
    config["hidden_size"] = serde_json::json!(1024);
    config["inner_hidden_size"] = serde_json::json!(4096);
    config["num_attention_heads"] = serde_json::json!(16);
    config["num_layers"] = serde_json::json!(4);
    let config =
        ChatGlmConfig::from_json_str(&config.to_string(), Path::new("config.json")).unwrap();
    ChatGlmModel::random(config, DType::F32, &Device::Cpu, 7).unwrap()
}

#[test]
fn quantization_error_at_a_trained_scale() {
    let reference = realistic_model();
    let cases = cases();
    let reference_ppl = perplexity(&reference, &cases);
    // (linear format, embedding format, max logit error, RMS logit error, perplexity change)
    // allowed, each about 1.5× what was measured (in the eprintln lines; README: Quantized inference).
    // q8_0 embeddings are what `glmtune quantize` writes by default; f16 ones isolate the linear
    // layers' own error.
    let limits = [
        (GgmlDType::Q8_0, GgmlDType::F16, 4e-4, 2e-3, 2.5e-4),
        (GgmlDType::Q8_0, GgmlDType::Q8_0, 2.2e-3, 9e-3, 8e-4),
        (GgmlDType::Q4_0, GgmlDType::F16, 3.5e-3, 1.5e-2, 1.6e-3),
        (GgmlDType::Q4_0, GgmlDType::Q8_0, 4e-3, 1.8e-2, 1.2e-3),
    ];
    for (format, embeddings, max_limit, rms_limit, ppl_limit) in limits {
        let quantized = reference.quantized(format, embeddings).unwrap();
        let (mut worst, mut rms) = (0f32, 0f32);
        for ids in &cases {
            let (q, f) = (
                logits_of(&quantized, None, ids),
                logits_of(&reference, None, ids),
            );
            worst = worst.max(relative_error(&q, &f));
            rms = rms.max(rms_error(&q, &f));
        }
        let ratio = perplexity(&quantized, &cases) / reference_ppl;
        eprintln!(
            "std-0.02 weights, {format:?} with {embeddings:?} embeddings: max logit error {worst:.2e}, RMS {rms:.2e}; perplexity ×{ratio:.6} of f32"
        );
        assert!(
            worst > 0.0 && worst < max_limit,
            "{format:?}/{embeddings:?}: {worst}"
        );
        assert!(rms < rms_limit, "{format:?}/{embeddings:?}: {rms}");
        assert!(
            (ratio - 1.0).abs() < ppl_limit,
            "{format:?}/{embeddings:?}: perplexity ratio {ratio}"
        );
    }
}

#[test]
fn rows_that_do_not_fill_a_block_are_refused_by_name() {
    // Hidden size 48 is not a multiple of the 32-weight block: the first matrix read says so.
    let source = scratch("odd-source");
    std::fs::create_dir_all(&source).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("model/config.json")).unwrap(),
    )
    .unwrap();
    config["hidden_size"] = serde_json::json!(48);
    std::fs::write(source.join("config.json"), config.to_string()).unwrap();
    let embeddings = Tensor::zeros((512, 48), DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([(
            "transformer.word_embeddings.weight".to_owned(),
            embeddings,
        )]),
        source.join("model.safetensors"),
    )
    .unwrap();
    let out = scratch("odd-out");
    let error = quantize_checkpoint(&source, &out, Bits::Four, EmbeddingFormat::Q8)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("word_embeddings.weight") && error.contains("block (32)"),
        "{error}"
    );
    assert!(!out.join(QUANTIZED_FILE).exists());
    std::fs::remove_dir_all(&source).unwrap();
}
