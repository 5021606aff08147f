//! Getting a model's weights onto the GPU, one tensor at a time: from a model loaded on the CPU
//! ([`GpuModel::upload`]), or straight from the tensors of `model.gguf` as a browser reads them
//! ([`GpuModelBuilder`]), so that the whole model never sits in (wasm) memory.
//!
//! Tensors go by their official names, with or without the `transformer.` prefix (ChatGLM2/3's
//! `embedding.`, `encoder.`, `self_attention` and `output_layer` are read as ChatGLM-6B's names);
//! `finish` checks that every one the architecture needs arrived with its shape, and ties the
//! output layer to the word embeddings (one copy on the GPU) when the file has no
//! `lm_head.weight` of its own.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use super::model::{GpuBlock, GpuLinear, GpuModel, GpuNorm};
use super::weights::GpuMatrix;
use super::{floats, gpu_error, Gpu};
use crate::config::ChatGlmConfig;
use crate::error::Result;
use crate::model::norm::Norm;
use crate::model::rotary::Rotary;
use crate::model::weights::{Linear, Matrix};
use crate::model::ChatGlmModel;

const OUTPUT_LAYER: &str = "lm_head.weight";

/// Weights uploaded so far, by name, until [`GpuModelBuilder::finish`] assembles the model.
pub struct GpuModelBuilder {
    gpu: Gpu,
    config: ChatGlmConfig,
    matrices: HashMap<String, GpuMatrix>,
    /// f32 vectors (LayerNorms and biases) with their length.
    vectors: HashMap<String, (wgpu::Buffer, usize)>,
}

/// The name a tensor goes by here: ChatGLM-6B's official one without `transformer.`.
fn official(name: &str) -> String {
    let name = name.strip_prefix("transformer.").unwrap_or(name);
    let name = name
        .strip_prefix("embedding.")
        .or_else(|| name.strip_prefix("encoder."))
        .unwrap_or(name);
    if name == "output_layer.weight" {
        return OUTPUT_LAYER.to_owned();
    }
    name.replace(".self_attention.", ".attention.")
}

impl GpuModelBuilder {
    pub fn new(gpu: Gpu, config: ChatGlmConfig) -> Self {
        Self {
            gpu,
            config,
            matrices: HashMap::new(),
            vectors: HashMap::new(),
        }
    }

    /// Uploads one tensor as a GGUF file stores it: a matrix in the kernels' layout (its blocks
    /// kept quantized), a vector as f32.
    pub fn add(&mut self, name: &str, tensor: QTensor) -> Result<()> {
        match tensor.shape().rank() {
            1 => self.add_vector(name, &tensor.dequantize(&Device::Cpu)?),
            2 => self.add_matrix(name, &Matrix::Quantized(Arc::new(tensor))),
            _ => Err(gpu_error(format!(
                "{name}: a tensor of shape {:?}; the model has only vectors and matrices",
                tensor.shape().dims()
            ))),
        }
    }

    pub fn add_matrix(&mut self, name: &str, matrix: &Matrix) -> Result<()> {
        let uploaded = GpuMatrix::upload(&self.gpu, name, matrix)?;
        self.matrices.insert(official(name), uploaded);
        Ok(())
    }

    pub fn add_vector(&mut self, name: &str, vector: &Tensor) -> Result<()> {
        let values = floats(vector)?;
        let buffer = self.gpu.storage(name, bytemuck::cast_slice(&values));
        self.vectors.insert(official(name), (buffer, values.len()));
        Ok(())
    }

    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<GpuMatrix> {
        let matrix = self
            .matrices
            .remove(name)
            .ok_or_else(|| gpu_error(format!("the weights lack the matrix {name}")))?;
        if (matrix.rows, matrix.cols) != (rows, cols) {
            return Err(gpu_error(format!(
                "{name} is {}×{}; config.json gives {rows}×{cols}",
                matrix.rows, matrix.cols
            )));
        }
        Ok(matrix)
    }

    fn vector(&mut self, name: &str, len: usize) -> Result<wgpu::Buffer> {
        let (buffer, found) = self
            .vectors
            .remove(name)
            .ok_or_else(|| gpu_error(format!("the weights lack the vector {name}")))?;
        if found != len {
            return Err(gpu_error(format!(
                "{name} holds {found} values; config.json gives {len}"
            )));
        }
        Ok(buffer)
    }

    fn norm(&mut self, name: &str) -> Result<GpuNorm> {
        let h = self.config.hidden_size;
        let rms = self.config.glm2().is_some_and(|g| g.rmsnorm);
        Ok(GpuNorm {
            weight: self.vector(&format!("{name}.weight"), h)?,
            bias: if rms {
                None
            } else {
                Some(self.vector(&format!("{name}.bias"), h)?)
            },
            eps: self.config.layernorm_epsilon as f32,
        })
    }

    fn linear(&mut self, name: &str, rows: usize, cols: usize) -> Result<GpuLinear> {
        let weight = self.matrix(&format!("{name}.weight"), rows, cols)?;
        let bias_name = format!("{name}.bias");
        let bias = if self.vectors.contains_key(&bias_name) {
            Some(self.vector(&bias_name, rows)?)
        } else {
            None
        };
        Ok(GpuLinear { weight, bias })
    }

    /// Assembles the model from what was uploaded.
    pub fn finish(mut self) -> Result<GpuModel> {
        let config = self.config.clone();
        let (h, inner, vocab) = (
            config.hidden_size,
            config.inner_hidden_size,
            config.vocab_size,
        );
        let word_embeddings = self.matrix("word_embeddings.weight", vocab, h)?;
        let lm_head = if self.matrices.contains_key(OUTPUT_LAYER) || config.glm2().is_some() {
            self.matrix(OUTPUT_LAYER, vocab, h)?
        } else {
            word_embeddings.clone()
        };
        let glm2 = config.glm2().is_some();
        let projection = config.num_attention_heads * config.head_dim();
        let qkv_rows = projection + 2 * config.kv_width();
        let up_rows = if glm2 { 2 * inner } else { inner };
        if self.vectors.contains_key("lm_head.bias") {
            return Err(gpu_error("an output layer with a bias is not supported"));
        }
        let blocks = (0..config.num_layers)
            .map(|i| {
                let p = format!("layers.{i}");
                Ok(GpuBlock {
                    input_layernorm: self.norm(&format!("{p}.input_layernorm"))?,
                    query_key_value: self.linear(
                        &format!("{p}.attention.query_key_value"),
                        qkv_rows,
                        h,
                    )?,
                    dense: self.linear(&format!("{p}.attention.dense"), h, projection)?,
                    post_attention_layernorm: self
                        .norm(&format!("{p}.post_attention_layernorm"))?,
                    dense_h_to_4h: self.linear(&format!("{p}.mlp.dense_h_to_4h"), up_rows, h)?,
                    dense_4h_to_h: self.linear(&format!("{p}.mlp.dense_4h_to_h"), h, inner)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_layernorm = match config.glm2() {
            Some(g) if !g.post_layer_norm => None,
            _ => Some(self.norm("final_layernorm")?),
        };
        let rotary = Rotary::of(&config, DType::F32, &Device::Cpu)?;
        let (max_positions, table_width) = rotary.cos.dims2()?;
        // ChatGLM2/3's tables have a column per rotated pair.
        let rotary_dim = if glm2 { 2 * table_width } else { table_width };
        let gpu = self.gpu;
        Ok(GpuModel {
            cos: gpu.storage("cos", bytemuck::cast_slice(&floats(&rotary.cos)?)),
            sin: gpu.storage("sin", bytemuck::cast_slice(&floats(&rotary.sin)?)),
            empty: gpu.storage("empty", &[0; 4]),
            scratch: std::sync::Mutex::new(None),
            config,
            word_embeddings,
            blocks,
            final_layernorm,
            lm_head,
            rotary_dim,
            table_width,
            max_positions,
            vocab,
            gpu,
        })
    }
}

impl GpuModel {
    /// Uploads `model`'s weights to `gpu`, one matrix at a time.
    pub fn upload(gpu: Gpu, model: &ChatGlmModel) -> Result<Self> {
        let mut builder = GpuModelBuilder::new(gpu, model.config().clone());
        let norm = |b: &mut GpuModelBuilder, name: &str, n: &Norm| -> Result<()> {
            b.add_vector(&format!("{name}.weight"), &n.weight)?;
            match &n.bias {
                Some(bias) => b.add_vector(&format!("{name}.bias"), bias),
                None => Ok(()),
            }
        };
        let linear = |b: &mut GpuModelBuilder, name: &str, l: &Linear| -> Result<()> {
            b.add_matrix(&format!("{name}.weight"), &l.weight)?;
            match &l.bias {
                Some(bias) => b.add_vector(&format!("{name}.bias"), bias),
                None => Ok(()),
            }
        };
        builder.add_matrix("word_embeddings.weight", &model.word_embeddings.0)?;
        for (i, block) in model.blocks.iter().enumerate() {
            let p = format!("layers.{i}");
            norm(
                &mut builder,
                &format!("{p}.input_layernorm"),
                &block.input_layernorm,
            )?;
            linear(
                &mut builder,
                &format!("{p}.attention.query_key_value"),
                &block.query_key_value,
            )?;
            linear(&mut builder, &format!("{p}.attention.dense"), &block.dense)?;
            norm(
                &mut builder,
                &format!("{p}.post_attention_layernorm"),
                &block.post_attention_layernorm,
            )?;
            linear(
                &mut builder,
                &format!("{p}.mlp.dense_h_to_4h"),
                &block.dense_h_to_4h,
            )?;
            linear(
                &mut builder,
                &format!("{p}.mlp.dense_4h_to_h"),
                &block.dense_4h_to_h,
            )?;
        }
        if let Some(final_layernorm) = &model.final_layernorm {
            norm(&mut builder, "final_layernorm", final_layernorm)?;
        }
        if !model.lm_head.weight.same(&model.word_embeddings.0) {
            linear(&mut builder, "lm_head", &model.lm_head)?;
        }
        builder.finish()
    }
}
