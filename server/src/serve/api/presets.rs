//! Run presets: THUDM's own recipe, a quick try, and domain templates (the official recipe with
//! lengths that suit the domain and a suggested system prompt, trained in as `source_prefix`).
//! The dashboard lists them from `/api/v1/presets`; a run's settings are its preset's under the
//! ones it gives.

use axum::Json;
use glmtune_shared::api::{List, Preset, RunSettings};

use crate::serve::ApiError;

/// THUDM's ptuning/train.sh.
fn official() -> RunSettings {
    RunSettings {
        pre_seq_len: Some(128),
        learning_rate: Some(2e-2),
        max_steps: Some(3000),
        per_device_train_batch_size: Some(1),
        gradient_accumulation_steps: Some(16),
        max_source_length: Some(64),
        max_target_length: Some(64),
        logging_steps: Some(10),
        save_steps: Some(1000),
        eval_steps: Some(500),
        ..RunSettings::default()
    }
}

/// The official recipe for a domain: its lengths and its system prompt.
fn domain(max_source_length: u64, max_target_length: u64, system: &str) -> RunSettings {
    RunSettings {
        max_source_length: Some(max_source_length),
        max_target_length: Some(max_target_length),
        source_prefix: Some(system.to_owned()),
        ..official()
    }
}

pub fn presets() -> Vec<Preset> {
    let preset = |name: &str, label: &str, description: &str, settings| Preset {
        name: name.into(),
        label: label.into(),
        description: description.into(),
        settings,
    };
    vec![
        preset(
            "official",
            "Official ChatGLM-6B recipe",
            "ptuning/train.sh: pre_seq_len 128, learning rate 2e-2, 64/64 tokens, batch 1 × 16, 3000 steps.",
            official(),
        ),
        preset(
            "quick",
            "Quick try",
            "20 steps with a short prefix: walks a dataset through training, evaluation and chat in minutes.",
            RunSettings {
                pre_seq_len: Some(16),
                max_steps: Some(20),
                gradient_accumulation_steps: Some(1),
                logging_steps: Some(1),
                save_steps: Some(10),
                eval_steps: Some(10),
                ..official()
            },
        ),
        preset(
            "medical",
            "Medical consultation",
            "The official recipe with room for symptoms (128 tokens) and careful answers (256 tokens).",
            domain(128, 256, "你是一名经验丰富的医生。请根据患者的描述给出专业、谨慎的建议，必要时提醒及时就医。"),
        ),
        preset(
            "finance",
            "Finance",
            "The official recipe with 128-token questions and answers, and a reminder of risk.",
            domain(128, 128, "你是一名专业的金融分析师。请用严谨、客观的语言回答，并提示相关风险。"),
        ),
        preset(
            "education",
            "Education",
            "The official recipe with 128-token questions and 256-token explanations.",
            domain(128, 256, "你是一名耐心的老师。请循序渐进、通俗易懂地讲解，并给出例子。"),
        ),
    ]
}

#[utoipa::path(
    get,
    path = "/api/v1/presets",
    summary = "Run presets and domain templates",
    responses((status = 200, body = List<Preset>))
)]
pub async fn list() -> Json<List<Preset>> {
    Json(List { data: presets() })
}

/// The preset's settings under the ones given.
pub fn resolve_settings(
    preset: Option<&str>,
    given: &RunSettings,
) -> Result<RunSettings, ApiError> {
    let name = preset.unwrap_or("official");
    let Some(base) = presets().into_iter().find(|p| p.name == name) else {
        let names: Vec<String> = presets().into_iter().map(|p| p.name).collect();
        return Err(ApiError::invalid(format!(
            "preset: unknown preset {name:?} ({})",
            names.join(", ")
        )));
    };
    let mut merged =
        serde_json::to_value(&base.settings).map_err(|e| ApiError::internal(e.to_string()))?;
    let given = serde_json::to_value(given).map_err(|e| ApiError::internal(e.to_string()))?;
    if let (Some(merged), Some(given)) = (merged.as_object_mut(), given.as_object()) {
        for (key, value) in given {
            merged.insert(key.clone(), value.clone());
        }
    }
    let mut settings: RunSettings =
        serde_json::from_value(merged).map_err(|e| ApiError::invalid(e.to_string()))?;
    if given.get("num_train_epochs").is_some() && given.get("max_steps").is_none() {
        settings.max_steps = None;
    }
    settings.check().map_err(ApiError::invalid)?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_domains_suggest_a_system_prompt() {
        for preset in presets() {
            let settings = resolve_settings(Some(&preset.name), &RunSettings::default()).unwrap();
            assert_eq!(settings, preset.settings, "{}", preset.name);
        }
        for name in ["medical", "finance", "education"] {
            let settings = resolve_settings(Some(name), &RunSettings::default()).unwrap();
            assert!(
                settings.source_prefix.is_some_and(|s| !s.is_empty()),
                "{name}"
            );
            assert_eq!(settings.pre_seq_len, Some(128), "{name}");
        }
    }

    #[test]
    fn given_settings_win_and_unknown_presets_are_named() {
        let given = RunSettings {
            max_steps: Some(7),
            source_prefix: Some(String::new()),
            ..RunSettings::default()
        };
        let settings = resolve_settings(Some("medical"), &given).unwrap();
        assert_eq!(settings.max_steps, Some(7));
        assert_eq!(settings.source_prefix.as_deref(), Some(""));
        assert_eq!(settings.max_target_length, Some(256));
        let error = resolve_settings(Some("legal"), &given).unwrap_err();
        assert!(
            format!("{error:?}").contains("official, quick, medical"),
            "{error:?}"
        );
    }
}
