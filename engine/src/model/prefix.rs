//! The P-Tuning v2 prefix encoder and the adapter folders that hold it.
//!
//! The encoder turns `pre_seq_len` learned rows into a key and a value per layer, which every
//! attention layer sees before the real tokens (never rotated, never masked).

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::config::{AdapterConfig, ChatGlmConfig, PrefixConfig};
use crate::error::{EngineError, Result};
use crate::model::init;

/// Tensor names of the prefix encoder, as the official model names them.
pub const EMBEDDING: &str = "transformer.prefix_encoder.embedding.weight";
pub const PROJECTION_IN_WEIGHT: &str = "transformer.prefix_encoder.trans.0.weight";
pub const PROJECTION_IN_BIAS: &str = "transformer.prefix_encoder.trans.0.bias";
pub const PROJECTION_OUT_WEIGHT: &str = "transformer.prefix_encoder.trans.2.weight";
pub const PROJECTION_OUT_BIAS: &str = "transformer.prefix_encoder.trans.2.bias";

/// Embedding → Linear → Tanh → Linear, used when `prefix_projection` is true.
#[derive(Debug, Clone)]
pub struct Projection {
    pub in_weight: Tensor,
    pub in_bias: Tensor,
    pub out_weight: Tensor,
    pub out_bias: Tensor,
}

/// The trainable part of P-Tuning v2. Its tensors are f32 master weights (they may be `Var`s).
#[derive(Debug, Clone)]
pub struct PrefixEncoder {
    pub config: PrefixConfig,
    pub embedding: Tensor,
    pub projection: Option<Projection>,
}

impl PrefixEncoder {
    /// The tensor shapes an encoder of `prefix` must have for `model`, by official name.
    pub fn expected_shapes(
        prefix: PrefixConfig,
        model: &ChatGlmConfig,
    ) -> Vec<(&'static str, Vec<usize>)> {
        let (p, h, l) = (prefix.pre_seq_len, model.hidden_size, model.num_layers);
        if model.glm2().is_some() {
            // ChatGLM2/3: every width is `kv = 2 · layers · kv_heads · head_dim`; the projection
            // goes kv → hidden → kv.
            let kv = 2 * l * model.kv_width();
            return if prefix.prefix_projection {
                vec![
                    (EMBEDDING, vec![p, kv]),
                    (PROJECTION_IN_WEIGHT, vec![h, kv]),
                    (PROJECTION_IN_BIAS, vec![h]),
                    (PROJECTION_OUT_WEIGHT, vec![kv, h]),
                    (PROJECTION_OUT_BIAS, vec![kv]),
                ]
            } else {
                vec![(EMBEDDING, vec![p, kv])]
            };
        }
        if prefix.prefix_projection {
            vec![
                (EMBEDDING, vec![p, h]),
                (PROJECTION_IN_WEIGHT, vec![h, h]),
                (PROJECTION_IN_BIAS, vec![h]),
                (PROJECTION_OUT_WEIGHT, vec![2 * l * h, h]),
                (PROJECTION_OUT_BIAS, vec![2 * l * h]),
            ]
        } else {
            vec![(EMBEDDING, vec![p, 2 * l * h])]
        }
    }

    /// A freshly initialised encoder, as torch initialises the official one: embedding rows
    /// N(0, 1), linear layers U(±1/√fan_in).
    pub fn random(
        prefix: PrefixConfig,
        model: &ChatGlmConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let shapes = Self::expected_shapes(prefix, model);
        let mut tensors = Vec::with_capacity(shapes.len());
        for (i, (name, shape)) in shapes.iter().enumerate() {
            let seed = seed.wrapping_add(i as u64);
            let tensor = if *name == EMBEDDING {
                init::normal(shape.as_slice(), 1.0, seed, device)?
            } else {
                let fan_in = match (*name, model.glm2()) {
                    (PROJECTION_IN_WEIGHT | PROJECTION_IN_BIAS, Some(_)) => {
                        2 * model.num_layers * model.kv_width()
                    }
                    _ => model.hidden_size,
                } as f32;
                init::uniform(shape.as_slice(), 1.0 / fan_in.sqrt(), seed, device)?
            };
            tensors.push(tensor);
        }
        Self::from_ordered(prefix, tensors)
    }

    /// Loads an adapter folder written by the official `ptuning/main.py` (or by us).
    pub fn load_adapter(dir: &Path, model: &ChatGlmConfig, device: &Device) -> Result<Self> {
        let adapter_config = AdapterConfig::from_file(&dir.join("config.json"))?;
        check_fits(&adapter_config, model, dir)?;
        let checkpoint = Checkpoint::open_with_extra(dir, &["adapter.safetensors"])?;
        Self::from_checkpoint(&checkpoint, adapter_config.prefix, model, device)
    }

    /// An adapter from the bytes of its `config.json` and `adapter.safetensors` (a browser that
    /// downloaded them); `name` names it in messages.
    pub fn from_bytes(
        name: &str,
        config_json: &str,
        safetensors: Vec<u8>,
        model: &ChatGlmConfig,
        device: &Device,
    ) -> Result<Self> {
        let dir = Path::new(name);
        let adapter_config = AdapterConfig::from_json_str(config_json, &dir.join("config.json"))?;
        check_fits(&adapter_config, model, dir)?;
        let checkpoint =
            Checkpoint::from_safetensors_bytes(&dir.join("adapter.safetensors"), safetensors)?;
        Self::from_checkpoint(&checkpoint, adapter_config.prefix, model, device)
    }

    /// Reads the encoder from `checkpoint`, checking it against what `prefix` declares.
    pub fn from_checkpoint(
        checkpoint: &Checkpoint,
        prefix: PrefixConfig,
        model: &ChatGlmConfig,
        device: &Device,
    ) -> Result<Self> {
        let dir = checkpoint.dir();
        let has_projection = checkpoint.contains(PROJECTION_IN_WEIGHT);
        if has_projection != prefix.prefix_projection {
            return Err(EngineError::adapter(
                dir,
                format!(
                    "prefix_projection mismatch: config.json says prefix_projection={}, but the weights {} the projection MLP (`{PROJECTION_IN_WEIGHT}`)",
                    prefix.prefix_projection,
                    if has_projection { "contain" } else { "lack" }
                ),
            ));
        }
        if !checkpoint.contains(EMBEDDING) {
            return Err(EngineError::tensor(
                checkpoint.path_of(EMBEDDING),
                EMBEDDING,
                "missing: this folder holds no P-Tuning v2 prefix encoder",
            ));
        }
        let embedding = checkpoint.load(EMBEDDING, None, DType::F32, device)?;
        let stored_len = embedding.dim(0)?;
        if stored_len != prefix.pre_seq_len {
            return Err(EngineError::adapter(
                dir,
                format!(
                    "pre_seq_len mismatch: config.json says pre_seq_len={}, but `{EMBEDDING}` holds {stored_len} prefix rows (pre_seq_len={stored_len})",
                    prefix.pre_seq_len
                ),
            ));
        }
        let mut tensors = Vec::new();
        for (name, shape) in Self::expected_shapes(prefix, model) {
            tensors.push(checkpoint.load(name, Some(&shape), DType::F32, device)?);
        }
        Self::from_ordered(prefix, tensors)
    }

    /// Writes an adapter folder in the official layout: `config.json` (the model's architecture
    /// with `pre_seq_len` and `prefix_projection`), `pytorch_model.bin` (only
    /// `transformer.prefix_encoder.*`, f32, loadable by `torch.load` and `main.py
    /// --ptuning_checkpoint`) and `adapter.safetensors` with the same tensors.
    pub fn save_adapter(&self, dir: &Path, model: &ChatGlmConfig) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let tensors: Vec<(String, Tensor)> = self
            .named_tensors()
            .into_iter()
            .map(|(name, t)| Ok((name.to_owned(), t.to_dtype(DType::F32)?.contiguous()?)))
            .collect::<Result<_>>()?;
        crate::checkpoint::torch_writer::save(&dir.join("pytorch_model.bin"), &tensors)?;
        let safetensors_path = dir.join("adapter.safetensors");
        let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
        candle_core::safetensors::save(&map, &safetensors_path)
            .map_err(|e| EngineError::checkpoint(&safetensors_path, e.to_string()))?;
        let mut config = model.to_json();
        config.insert("pre_seq_len".into(), self.config.pre_seq_len.into());
        config.insert(
            "prefix_projection".into(),
            self.config.prefix_projection.into(),
        );
        let config = serde_json::Value::Object(config);
        let config_path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| EngineError::checkpoint(&config_path, e.to_string()))?;
        crate::checkpoint::write_atomically(&config_path, text.as_bytes())
    }

    /// Assembles an encoder from tensors in the order of [`PrefixEncoder::expected_shapes`].
    fn from_ordered(prefix: PrefixConfig, tensors: Vec<Tensor>) -> Result<Self> {
        let expected = if prefix.prefix_projection { 5 } else { 1 };
        if tensors.len() != expected {
            return Err(EngineError::Input(format!(
                "a prefix encoder needs {expected} tensors, got {}",
                tensors.len()
            )));
        }
        let mut tensors = tensors.into_iter();
        let embedding = tensors.next();
        let projection = if prefix.prefix_projection {
            match (
                tensors.next(),
                tensors.next(),
                tensors.next(),
                tensors.next(),
            ) {
                (Some(in_weight), Some(in_bias), Some(out_weight), Some(out_bias)) => {
                    Some(Projection {
                        in_weight,
                        in_bias,
                        out_weight,
                        out_bias,
                    })
                }
                _ => None,
            }
        } else {
            None
        };
        Ok(Self {
            config: prefix,
            embedding: embedding
                .ok_or_else(|| EngineError::Input("prefix embedding missing".into()))?,
            projection,
        })
    }

    /// The same encoder on `device` (a data-parallel rank's own copy).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let moved = |t: &Tensor| t.to_device(device);
        Ok(Self {
            config: self.config,
            embedding: moved(&self.embedding)?,
            projection: match &self.projection {
                Some(p) => Some(Projection {
                    in_weight: moved(&p.in_weight)?,
                    in_bias: moved(&p.in_bias)?,
                    out_weight: moved(&p.out_weight)?,
                    out_bias: moved(&p.out_bias)?,
                }),
                None => None,
            },
        })
    }

    /// The named tensors, in the official names, for saving.
    pub fn named_tensors(&self) -> Vec<(&'static str, Tensor)> {
        let mut named = vec![(EMBEDDING, self.embedding.clone())];
        if let Some(p) = &self.projection {
            named.extend([
                (PROJECTION_IN_WEIGHT, p.in_weight.clone()),
                (PROJECTION_IN_BIAS, p.in_bias.clone()),
                (PROJECTION_OUT_WEIGHT, p.out_weight.clone()),
                (PROJECTION_OUT_BIAS, p.out_bias.clone()),
            ]);
        }
        named
    }

    /// The encoder's output, `[pre_seq_len, 2 · num_layers · kv_heads · head_dim]` in f32.
    pub fn encode(&self) -> Result<Tensor> {
        let Some(p) = &self.projection else {
            return Ok(self.embedding.clone());
        };
        let hidden = self
            .embedding
            .matmul(&p.in_weight.t()?)?
            .broadcast_add(&p.in_bias)?
            .tanh()?;
        Ok(hidden
            .matmul(&p.out_weight.t()?)?
            .broadcast_add(&p.out_bias)?)
    }

    /// Per-layer `(key, value)`, each `[batch, kv_heads, pre_seq_len, head_dim]` in `dtype` (the
    /// official model casts the encoder output to the embeddings' dtype).
    pub fn key_values(
        &self,
        model: &ChatGlmConfig,
        batch: usize,
        dtype: DType,
    ) -> Result<Vec<(Tensor, Tensor)>> {
        let encoded = self.encode()?.to_dtype(dtype)?.unsqueeze(0)?;
        let encoded = encoded.broadcast_as((batch, encoded.dim(1)?, encoded.dim(2)?))?;
        split_key_values(&encoded, model)
    }
}

/// Splits batched encoder output `[batch, pre_seq_len, 2 · layers · kv_heads · head_dim]` into
/// per-layer `(key, value)` of `[batch, kv_heads, pre_seq_len, head_dim]`: layer i's key is slot 2i and its
/// value slot 2i + 1 of the `2 · layers` axis, as the official `get_prompt` splits them.
pub fn split_key_values(encoded: &Tensor, model: &ChatGlmConfig) -> Result<Vec<(Tensor, Tensor)>> {
    let (batch, p, _) = encoded.dims3()?;
    let (l, nh, hd) = (model.num_layers, model.kv_heads(), model.head_dim());
    // [b, p, 2l, nh, hd] → [2l, b, nh, p, hd]
    let per_layer = encoded
        .reshape((batch, p, 2 * l, nh, hd))?
        .permute((2, 0, 3, 1, 4))?;
    (0..l)
        .map(|layer| {
            let key = per_layer.get(2 * layer)?.contiguous()?;
            let value = per_layer.get(2 * layer + 1)?.contiguous()?;
            Ok((key, value))
        })
        .collect()
}

/// Refuses an adapter trained for another architecture, naming the field.
fn check_fits(adapter: &AdapterConfig, model: &ChatGlmConfig, dir: &Path) -> Result<()> {
    for (field, ours, theirs) in [
        ("hidden_size", model.hidden_size, adapter.hidden_size),
        ("num_layers", model.num_layers, adapter.num_layers),
    ] {
        if let Some(theirs) = theirs {
            if theirs != ours {
                return Err(EngineError::adapter(
                    dir,
                    format!("was trained for {field} {theirs}, but the model has {field} {ours}"),
                ));
            }
        }
    }
    Ok(())
}
