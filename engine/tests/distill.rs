//! Prefix distillation on the fixture: the teacher is the f32 model with the fixture's trained
//! adapter, the student the same model with q4_0 linear layers. The teacher's adapter reused as
//! it is on the quantized base answers some way from the teacher; a prefix distilled from the
//! teacher (starting from that adapter) on the teacher's answers to half of the general prompts
//! answers closer — lower KL, more greedy agreement — on the other half, which it never saw.
//!
//! The fixture's random 64-wide weights lose much to 4 bits (KL about 2.5 nats a token), and a
//! prefix mends only a little of it there: the test asks for an improvement, not its size.

mod common;

use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
use glmtune_engine::generation::chat_prompt_ids;
use glmtune_engine::generation::forgetting::{answers, divergence, general_probes, Side};
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::tokenizer::ChatGlmTokenizer;
use glmtune_engine::train::{Example, Teacher, TrainOptions, Trainer};

use common::*;

fn options(max_steps: u64) -> TrainOptions {
    TrainOptions {
        per_device_train_batch_size: 2,
        gradient_accumulation_steps: 1,
        learning_rate: 0.02,
        max_steps,
        prefix_dropout: 0.0,
        shuffle: false,
        ..TrainOptions::default()
    }
}

#[test]
fn a_distilled_prefix_answers_closer_to_its_teacher_on_a_quantized_base() {
    let dir = fixture_dir().join("model");
    let teacher_model = Arc::new(ChatGlmModel::load(&dir, DType::F32, &Device::Cpu).unwrap());
    let adapter = || {
        PrefixEncoder::load_adapter(
            &fixture_dir().join("adapter_trained"),
            teacher_model.config(),
            &Device::Cpu,
        )
        .unwrap()
    };
    let tuned = adapter();
    let student = teacher_model.quantized_layers(GgmlDType::Q4_0).unwrap();
    let tokenizer = ChatGlmTokenizer::from_dir(&dir).unwrap();
    let prompts: Vec<Vec<u32>> = general_probes()
        .iter()
        .map(|p| chat_prompt_ids(&tokenizer, None, &[], p))
        .collect();
    let teacher_side = Side {
        model: &teacher_model,
        prefix: Some(&tuned),
    };
    // The teacher's answers to every other general prompt are the distillation set; the rest are
    // held out.
    let all = answers(teacher_side, &prompts, 16).unwrap();
    let (train, held_out): (Vec<_>, Vec<_>) = all.into_iter().partition(|a| a.prompt % 2 == 0);
    assert_eq!(
        divergence(teacher_side, teacher_side, &held_out)
            .unwrap()
            .kl,
        0.0
    );
    let reused = divergence(
        teacher_side,
        Side {
            model: &student,
            prefix: Some(&tuned),
        },
        &held_out,
    )
    .unwrap();

    let examples: Vec<Example> = train
        .iter()
        .map(|a| Example {
            input_ids: a.ids.clone(),
            labels: a
                .ids
                .iter()
                .enumerate()
                .map(|(i, &id)| {
                    if i < a.prompt_len {
                        -100
                    } else {
                        i64::from(id)
                    }
                })
                .collect(),
        })
        .collect();
    let teacher = Arc::new(Teacher::new(teacher_model.clone(), Some(adapter()), 1.0, 0.0).unwrap());
    // The objective of a student that is its teacher is 0.
    let itself = Trainer::new(&teacher_model, &tuned, options(1))
        .unwrap()
        .with_teacher(teacher.clone())
        .unwrap();
    assert!(itself.evaluate(&examples).unwrap().abs() < 1e-6);

    let mut trainer = Trainer::new(&student, &tuned, options(40))
        .unwrap()
        .with_teacher(teacher)
        .unwrap();
    let before = trainer.evaluate(&examples).unwrap();
    let losses = train_losses(&mut trainer, &examples);
    let after_training = trainer.evaluate(&examples).unwrap();
    let distilled = trainer.encoder().unwrap();
    let closer = divergence(
        teacher_side,
        Side {
            model: &student,
            prefix: Some(&distilled),
        },
        &held_out,
    )
    .unwrap();
    println!(
        "training prompts: KL {before:.5} -> {after_training:.5}; held out ({} tokens): reused adapter KL {:.5}, agreement {:.4}; distilled KL {:.5}, agreement {:.4}",
        reused.tokens, reused.kl, reused.agreement, closer.kl, closer.agreement
    );
    assert!(before > 0.0 && after_training < before, "{losses:?}");
    assert!(
        closer.kl < reused.kl,
        "reused {reused:?}, distilled {closer:?}"
    );
    assert!(
        closer.agreement >= reused.agreement,
        "reused {reused:?}, distilled {closer:?}"
    );
}
