//! Continuous batching behind the one-answer interface ([`Backend`]): every generation asked of a
//! [`Batcher`] joins one [`Streams`] decoded by a worker thread, so concurrent chats share each
//! step's read of the weights instead of queueing for the model. A caller receives its tokens as
//! they are chosen; stopping (its `on_token` breaking, or dropping the call) takes its stream out
//! at the next step. A stream's tokens are those it gets alone (see [`super::streams`]).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use super::answer::Backend;
use super::streams::{StreamRequest, Streams};
use super::GenerationOptions;
use crate::error::{EngineError, Result};
use crate::model::{ChatGlmModel, PrefixEncoder};

/// One generation asked of the worker.
struct Job {
    prefix: Option<PrefixEncoder>,
    prompt: Vec<u32>,
    options: GenerationOptions,
    events: mpsc::Sender<Event>,
    stopped: Arc<AtomicBool>,
}

enum Event {
    Token(u32),
    Done(Result<()>),
}

/// A model whose generations are decoded together by one worker thread.
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
    eos_token_id: u32,
}

impl Batcher {
    /// Starts the worker that decodes `model`'s generations, every active one in each step; it
    /// ends when the batcher is dropped.
    pub fn new(model: Arc<ChatGlmModel>) -> Result<Self> {
        Self::with_streams(model, usize::MAX)
    }

    /// As [`new`](Self::new), with at most `at_once` generations sharing a step (the others wait
    /// in arrival order; 1: they take turns).
    pub fn with_streams(model: Arc<ChatGlmModel>, at_once: usize) -> Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let eos_token_id = model.config().eos_token_id;
        let at_once = at_once.max(1);
        std::thread::Builder::new()
            .name("glmtune-batcher".into())
            .spawn(move || work(&model, &queue, at_once))
            .map_err(|e| EngineError::Input(format!("starting the batching thread: {e}")))?;
        Ok(Batcher { jobs, eos_token_id })
    }
}

/// The worker: admits what is waiting between steps (up to `at_once` streams active, in arrival
/// order), steps while any stream is active, and sleeps on the queue when none is.
fn work(model: &ChatGlmModel, queue: &mpsc::Receiver<Job>, at_once: usize) {
    let mut streams = Streams::new(model);
    let mut active: std::collections::HashMap<usize, Job> = std::collections::HashMap::new();
    let mut waiting: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    loop {
        if active.is_empty() && waiting.is_empty() {
            match queue.recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => return,
            }
        }
        waiting.extend(queue.try_iter());
        while active.len() < at_once {
            let Some(job) = waiting.pop_front() else {
                break;
            };
            if job.stopped.load(Ordering::Relaxed) {
                continue;
            }
            let request = StreamRequest {
                prompt: job.prompt.clone(),
                options: job.options.clone(),
                prefix: job.prefix.as_ref(),
            };
            match streams.admit(request) {
                Ok(id) => {
                    active.insert(id, job);
                }
                Err(error) => {
                    let _ = job.events.send(Event::Done(Err(error)));
                }
            }
        }
        if active.is_empty() {
            continue;
        }
        let stepped = streams.step(|id, token| match active.get(&id) {
            Some(job)
                if !job.stopped.load(Ordering::Relaxed)
                    && job.events.send(Event::Token(token)).is_ok() =>
            {
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break(()),
        });
        match stepped {
            Ok(finished) => {
                for done in finished {
                    if let Some(job) = active.remove(&done.stream) {
                        let _ = job.events.send(Event::Done(Ok(())));
                    }
                }
            }
            Err(error) => {
                // A failed step leaves the streams' caches unusable: every active one ends.
                let message = error.to_string();
                for (_, job) in active.drain() {
                    let failure = EngineError::Input(format!("decoding failed: {message}"));
                    let _ = job.events.send(Event::Done(Err(failure)));
                }
                streams = Streams::new(model);
            }
        }
    }
}

impl Backend for Batcher {
    fn eos_token_id(&self) -> u32 {
        self.eos_token_id
    }

    async fn generate_one(
        &self,
        prefix: Option<&PrefixEncoder>,
        prompt: &[u32],
        options: &GenerationOptions,
        mut on_token: impl FnMut(u32) -> ControlFlow<()>,
    ) -> Result<Vec<u32>> {
        let (events, received) = mpsc::channel();
        let stopped = Arc::new(AtomicBool::new(false));
        // Dropping this call (or breaking) takes the stream out at the worker's next step.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(stopped.clone());
        self.jobs
            .send(Job {
                prefix: prefix.cloned(),
                prompt: prompt.to_vec(),
                options: options.clone(),
                events,
                stopped,
            })
            .map_err(|_| EngineError::Input("the batching thread has stopped".into()))?;
        let mut ids = Vec::new();
        loop {
            match received.recv() {
                Ok(Event::Token(token)) => {
                    ids.push(token);
                    if on_token(token) == ControlFlow::Break(()) {
                        return Ok(ids);
                    }
                }
                Ok(Event::Done(outcome)) => return outcome.map(|()| ids),
                Err(_) => return Err(EngineError::Input("the batching thread has stopped".into())),
            }
        }
    }
}
