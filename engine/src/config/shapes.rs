//! The official configs of the released checkpoints, and smaller shapes of the same architectures,
//! for benchmarks with random weights (`glmtune bench train`) where no checkpoint is at hand.

use std::path::Path;

use super::{ChatGlmConfig, Family};
use crate::error::{EngineError, Result};

/// `config.json` of `THUDM/chatglm-6b` (the fields the model reads).
const CHATGLM_6B: &str = r#"{"architectures": ["ChatGLMModel"], "model_type": "chatglm",
 "bos_token_id": 130004, "eos_token_id": 130005, "mask_token_id": 130000, "gmask_token_id": 130001,
 "pad_token_id": 3, "hidden_size": 4096, "inner_hidden_size": 16384, "layernorm_epsilon": 1e-05,
 "max_sequence_length": 2048, "num_attention_heads": 32, "num_layers": 28,
 "position_encoding_2d": true, "torch_dtype": "float16", "use_cache": true, "vocab_size": 130528}"#;

/// `config.json` of `THUDM/chatglm2-6b`; `THUDM/chatglm3-6b` differs in `seq_length` (8192).
const CHATGLM2_6B: &str = r#"{"architectures": ["ChatGLMModel"], "model_type": "chatglm",
 "add_bias_linear": false, "add_qkv_bias": true, "apply_query_key_layer_scaling": true,
 "apply_residual_connection_post_layernorm": false, "attention_softmax_in_fp32": true,
 "ffn_hidden_size": 13696, "hidden_size": 4096, "kv_channels": 128, "layernorm_epsilon": 1e-05,
 "multi_query_attention": true, "multi_query_group_num": 2, "num_attention_heads": 32,
 "num_layers": 28, "original_rope": true, "padded_vocab_size": 65024, "post_layer_norm": true,
 "rmsnorm": true, "seq_length": 32768, "eos_token_id": 2, "pad_token_id": 0,
 "torch_dtype": "float16", "use_cache": true}"#;

/// A config by name: `chatglm-6b`, `chatglm2-6b`, `chatglm3-6b`, `mid`, `mid-chatglm3`, or `h{hidden}l{layers}` (the
/// ChatGLM-6B architecture at that hidden size and depth, 128-wide heads, a 4× MLP, the real
/// vocabulary), with the family it belongs to.
pub fn named(name: &str) -> Result<(ChatGlmConfig, Family)> {
    let path = Path::new(name);
    let parse = |text: &str| ChatGlmConfig::from_json_str(text, path);
    match name {
        "chatglm-6b" => Ok((parse(CHATGLM_6B)?, Family::ChatGlm)),
        "chatglm2-6b" => Ok((parse(CHATGLM2_6B)?, Family::ChatGlm2)),
        "chatglm3-6b" => {
            let text = CHATGLM2_6B.replace("\"seq_length\": 32768", "\"seq_length\": 8192");
            Ok((parse(&text)?, Family::ChatGlm3))
        }
        // `performance.md`'s decode model: ChatGLM-6B's architecture, hidden 2048, 16 layers,
        // inner 8192, a 512-token vocabulary (≈0.8 B parameters, nearly all in the blocks).
        "mid" => Ok((
            ChatGlmConfig::synthetic(512, 2048, 16, 16, 8192),
            Family::ChatGlm,
        )),
        // The same size in ChatGLM3's architecture: multi-query attention (2 key/value heads of
        // 128), SwiGLU, RMSNorm, a 512-token vocabulary and its own output layer.
        "mid-chatglm3" => {
            let mut json: serde_json::Value = serde_json::from_str(CHATGLM2_6B)
                .map_err(|e| EngineError::Input(e.to_string()))?;
            json["hidden_size"] = 2048.into();
            json["ffn_hidden_size"] = 8192.into();
            json["num_attention_heads"] = 16.into();
            json["num_layers"] = 16.into();
            json["padded_vocab_size"] = 512.into();
            json["seq_length"] = 8192.into();
            Ok((parse(&json.to_string())?, Family::ChatGlm3))
        }
        _ => smaller(name).ok_or_else(|| {
            EngineError::Input(format!(
                "unknown config {name:?}: chatglm-6b, chatglm2-6b, chatglm3-6b, mid, mid-chatglm3 or h{{hidden}}l{{layers}} (e.g. h1024l12)"
            ))
        }),
    }
}

fn smaller(name: &str) -> Option<(ChatGlmConfig, Family)> {
    let (hidden, layers) = name.strip_prefix('h')?.split_once('l')?;
    let (hidden, layers): (usize, usize) = (hidden.parse().ok()?, layers.parse().ok()?);
    if hidden == 0 || !hidden.is_multiple_of(128) || layers == 0 || layers > 1024 || hidden > 65536
    {
        return None;
    }
    let mut json: serde_json::Value = serde_json::from_str(CHATGLM_6B).ok()?;
    json["hidden_size"] = hidden.into();
    json["inner_hidden_size"] = (4 * hidden).into();
    json["num_attention_heads"] = (hidden / 128).into();
    json["num_layers"] = layers.into();
    let config = ChatGlmConfig::from_json_str(&json.to_string(), Path::new(name)).ok()?;
    Some((config, Family::ChatGlm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_shapes_have_six_billion_parameters() {
        for name in ["chatglm-6b", "chatglm2-6b", "chatglm3-6b"] {
            let (config, _) = named(name).unwrap();
            let h = config.hidden_size;
            let qkv = h * (h + 2 * config.kv_heads() * config.head_dim());
            let mlp_in = if config.glm2().is_some() { 2 } else { 1 } * config.inner_hidden_size * h;
            let per_layer = qkv + h * h + mlp_in + config.inner_hidden_size * h;
            let embeddings = config.vocab_size * h * if config.glm2().is_some() { 2 } else { 1 };
            let total = per_layer * config.num_layers + embeddings;
            assert!((6.0e9..6.5e9).contains(&(total as f64)), "{name}: {total}");
        }
        let (small, family) = named("h1024l12").unwrap();
        assert_eq!(
            (small.hidden_size, small.num_layers, family),
            (1024, 12, Family::ChatGlm)
        );
        assert!(named("h1000l12").is_err() && named("gpt").is_err());
        let (mid3, family) = named("mid-chatglm3").unwrap();
        assert_eq!(family, Family::ChatGlm3);
        assert_eq!(
            (
                mid3.hidden_size,
                mid3.num_layers,
                mid3.kv_heads(),
                mid3.vocab_size
            ),
            (2048, 16, 2, 512)
        );
    }
}
