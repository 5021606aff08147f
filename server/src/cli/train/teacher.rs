//! `glmtune train --teacher-adapter/--teacher-model`: the teacher a prefix is distilled from.

use std::sync::Arc;

use anyhow::Context;
use candle_core::{DType, Device};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::train::Teacher;
use glmtune_shared::train_job::TrainJob;

/// The job's teacher: its base (the student's folder unless another is given) loaded without
/// quantization, in f32 on the CPU and bf16 on a GPU (a 6B teacher in 12 GB beside its student),
/// with its adapter.
pub(super) fn load(job: &TrainJob, device: &Device) -> anyhow::Result<Teacher> {
    let dir = job.teacher_model.as_ref().unwrap_or(&job.model);
    let dtype = if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    };
    let model = ChatGlmModel::load(dir, dtype, device)
        .with_context(|| format!("loading the teacher {}", dir.display()))?;
    let prefix = match &job.teacher_adapter {
        Some(adapter) => Some(
            PrefixEncoder::load_adapter(adapter, model.config(), device)
                .with_context(|| format!("loading the teacher's adapter {}", adapter.display()))?,
        ),
        None => None,
    };
    let s = &job.settings;
    eprintln!(
        "glmtune: distilling from {}{}",
        dir.display(),
        job.teacher_adapter
            .as_ref()
            .map(|a| format!(" with the adapter {}", a.display()))
            .unwrap_or_default()
    );
    Ok(Teacher::new(
        Arc::new(model),
        prefix,
        s.distill_temperature.unwrap_or(1.0),
        s.distill_hard_weight.unwrap_or(0.0),
    )?)
}
