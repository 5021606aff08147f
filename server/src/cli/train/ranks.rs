//! The other ranks of a data-parallel run (`--nproc-per-node N`). Rank 0 is the run itself: it
//! logs, evaluates, saves checkpoints and decides after each step whether the run goes on. Ranks
//! 1..N are threads of this process, each with its own trainer (on the CPU sharing rank 0's
//! weights; on CUDA with a copy on its own device), running its share of every step and summing
//! gradients with the others, then following rank 0's decision — so every rank takes the same
//! steps and none waits forever in a sum another has left.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use glmtune_engine::model::{ChatGlmModel, PrefixEncoder};
use glmtune_engine::train::{Collective, Example, Teacher, TrainOptions, Trainer};

/// What one rank trains with.
pub(super) struct Replica {
    pub model: ChatGlmModel,
    pub init: PrefixEncoder,
    pub teacher: Option<Arc<Teacher>>,
}

/// A rank after rank 0: what it trains with and its place in the group.
pub(super) type Follower = (Replica, Arc<dyn Collective>);

/// Ranks 1..N, running.
pub(super) struct Followers {
    decisions: Vec<mpsc::Sender<bool>>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Followers {
    /// Starts a rank for each replica with its collective (ranks 1.. in order), each restoring
    /// `resume` first when rank 0 resumed from it.
    pub fn start(
        replicas: Vec<Follower>,
        options: &TrainOptions,
        train: &[Example],
        resume: Option<PathBuf>,
    ) -> anyhow::Result<Followers> {
        let mut followers = Followers {
            decisions: Vec::new(),
            threads: Vec::new(),
        };
        // One process alone (the usual run) copies nothing.
        if replicas.is_empty() {
            return Ok(followers);
        }
        let train = Arc::new(train.to_vec());
        for (replica, collective) in replicas {
            let rank = collective.rank();
            let mut trainer = Trainer::new(&replica.model, &replica.init, options.clone())?
                .with_collective(collective);
            if let Some(teacher) = replica.teacher {
                trainer = trainer.with_teacher(teacher)?;
            }
            if let Some(dir) = &resume {
                trainer
                    .restore_checkpoint(dir)
                    .with_context(|| format!("rank {rank}: resuming from {}", dir.display()))?;
            }
            let (tx, rx) = mpsc::channel::<bool>();
            let train = train.clone();
            let thread = std::thread::Builder::new()
                .name(format!("glmtune-rank-{rank}"))
                .spawn(move || -> anyhow::Result<()> {
                    trainer
                        .run(&train, |_, _| {
                            // Rank 0 gone (its run failed) counts as a stop.
                            Ok(match rx.recv() {
                                Ok(true) => std::ops::ControlFlow::Continue(()),
                                _ => std::ops::ControlFlow::Break(()),
                            })
                        })
                        .with_context(|| format!("data-parallel rank {rank}"))
                })
                .context("starting a data-parallel rank")?;
            followers.decisions.push(tx);
            followers.threads.push(thread);
        }
        Ok(followers)
    }

    /// Rank 0's decision after a step: every rank goes on, or every rank stops there.
    pub fn decide(&self, go_on: bool) {
        for decision in &self.decisions {
            // A rank that already ended reports why at `join`.
            let _ = decision.send(go_on);
        }
    }

    /// Waits for every rank to end; the first failure, if any.
    pub fn join(self) -> anyhow::Result<()> {
        drop(self.decisions);
        for thread in self.threads {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a data-parallel rank panicked"))??;
        }
        Ok(())
    }
}
