//! Arguments shared by the subcommands that load a model, and the loading itself.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::tokenizer::ChatGlmTokenizer;

/// `--device cpu|cuda|cuda:N` (in the library, as `glmtune serve` takes it too).
pub(crate) use glmtune::device::DeviceArg;
use glmtune::device::DeviceSpec;
pub use glmtune::precision::DTypeArg;

/// Where the forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendArg {
    /// candle on the CPU.
    Cpu,
    /// WGSL kernels on wgpu (Vulkan, Metal, DX12, GL), f32 arithmetic, quantized weights kept packed.
    Wgpu,
}

/// `--backend wgpu` runs on its own adapter from weights on the CPU: a `--device` other than cpu
/// would load them onto a GPU only for nothing, so the pair is refused.
pub fn check_backend(backend: BackendArg, model: &ModelArgs) -> anyhow::Result<()> {
    if backend == BackendArg::Wgpu && model.device.spec != DeviceSpec::Cpu {
        anyhow::bail!(
            "--backend wgpu runs on a wgpu adapter; --device {} needs --backend cpu",
            model.device.spec
        );
    }
    Ok(())
}

/// Opens the first GPU adapter and uploads `model` to it.
pub fn upload_to_gpu(model: &ChatGlmModel) -> anyhow::Result<glmtune_engine::gpu::GpuModel> {
    let gpu = glmtune_engine::gpu::Gpu::blocking()?;
    let description = gpu.description.clone();
    glmtune_engine::gpu::GpuModel::upload(gpu, model)
        .with_context(|| format!("uploading the model to {description}"))
}

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Checkpoint folder in the Hugging Face layout (config.json, weights, ice_text.model).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// P-Tuning v2 adapter folder (official ptuning/ checkpoint layout or ours).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Precision of the base weights.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// A model ready to run: weights, optional prefix and tokenizer.
pub struct Loaded {
    pub model: ChatGlmModel,
    pub prefix: Option<PrefixEncoder>,
    pub tokenizer: ChatGlmTokenizer,
}

impl ModelArgs {
    /// Loads the weights, the adapter when given, and the tokenizer.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        let (model, prefix) = self.load_weights()?;
        let tokenizer = load_tokenizer(&self.model)?;
        Ok(Loaded {
            model,
            prefix,
            tokenizer,
        })
    }

    /// Loads the weights and the adapter when given.
    pub fn load_weights(&self) -> anyhow::Result<(ChatGlmModel, Option<PrefixEncoder>)> {
        let device = self.device.device()?;
        let model = ChatGlmModel::load(&self.model, self.dtype.into(), &device)
            .with_context(|| format!("loading model {}", self.model.display()))?;
        let prefix = match &self.adapter {
            Some(dir) => Some(
                PrefixEncoder::load_adapter(dir, model.config(), &device)
                    .with_context(|| format!("loading adapter {}", dir.display()))?,
            ),
            None => None,
        };
        Ok((model, prefix))
    }
}

pub fn load_tokenizer(model_dir: &Path) -> anyhow::Result<ChatGlmTokenizer> {
    ChatGlmTokenizer::from_dir(model_dir)
        .with_context(|| format!("loading the tokenizer of {}", model_dir.display()))
}
