//! A teacher behind an OpenAI-compatible `/v1/chat/completions` (this server's own, a tuned model
//! on it, or an outside service): one question at a time per thread, retried with exponential
//! backoff on 429, 5xx and connection failures (a `Retry-After` is honoured), requests spaced to
//! stay under a rate, and the tokens each answer cost counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glmtune_shared::openai::{ChatCompletion, ChatCompletionRequest, ChatMessage};
use parking_lot::Mutex;

/// Where the teacher is and how to ask it.
pub struct Teacher {
    /// The base URL, ending before `/chat/completions` (`http://127.0.0.1:8080/v1`).
    pub url: String,
    pub key: Option<String>,
    pub model: String,
    pub max_tokens: usize,
    pub temperature: f32,
    pub max_retries: u32,
    /// The least time between two requests (all threads together); zero: no limit.
    pub spacing: Duration,
    pub agent: ureq::Agent,
    next_slot: Mutex<Instant>,
    pub retries: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
}

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the teacher answered {status} {body} (after {tries} tries)")]
    Status {
        status: u16,
        body: String,
        tries: u32,
    },
    #[error("the teacher could not be reached: {message} (after {tries} tries)")]
    Transport { message: String, tries: u32 },
    #[error("the teacher's answer is not a chat completion: {0}")]
    Shape(String),
}

impl Teacher {
    pub fn new(
        url: &str,
        key: Option<String>,
        model: &str,
        requests_per_minute: Option<f64>,
    ) -> Self {
        let agent = ureq::Agent::config_builder()
            // Statuses are read, not turned into errors: a 429 is a reason to wait.
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .new_agent();
        Teacher {
            url: url.trim_end_matches('/').to_owned(),
            key,
            model: model.to_owned(),
            max_tokens: 256,
            temperature: 0.0,
            max_retries: 5,
            spacing: requests_per_minute
                .filter(|r| *r > 0.0)
                .map_or(Duration::ZERO, |r| Duration::from_secs_f64(60.0 / r)),
            agent,
            next_slot: Mutex::new(Instant::now()),
            retries: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
        }
    }

    /// Waits for this request's turn under the rate.
    fn pace(&self) {
        if self.spacing.is_zero() {
            return;
        }
        let at = {
            let mut next = self.next_slot.lock();
            let at = (*next).max(Instant::now());
            *next = at + self.spacing;
            at
        };
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
    }

    /// The teacher's answer to `question` (`seed` varies sampled answers).
    pub fn ask(&self, question: &str, seed: Option<u64>) -> Result<String, AskError> {
        let request = ChatCompletionRequest {
            model: self.model.clone(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: question.to_owned(),
            }],
            temperature: Some(self.temperature),
            top_p: None,
            max_tokens: Some(self.max_tokens),
            stream: None,
            seed,
            stop: None,
            max_completion_tokens: None,
            n: None,
            presence_penalty: None,
            frequency_penalty: None,
            other: Default::default(),
        };
        let url = format!("{}/chat/completions", self.url);
        let mut tries = 0;
        loop {
            tries += 1;
            self.pace();
            let mut call = self.agent.post(&url);
            if let Some(key) = &self.key {
                call = call.header("Authorization", &format!("Bearer {key}"));
            }
            let (retry_after, failure) = match call.send_json(&request) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if status == 200 {
                        let answer: ChatCompletion = response
                            .body_mut()
                            .read_json()
                            .map_err(|e| AskError::Shape(e.to_string()))?;
                        self.prompt_tokens
                            .fetch_add(answer.usage.prompt_tokens as u64, Ordering::Relaxed);
                        self.completion_tokens
                            .fetch_add(answer.usage.completion_tokens as u64, Ordering::Relaxed);
                        let choice = answer
                            .choices
                            .into_iter()
                            .next()
                            .ok_or_else(|| AskError::Shape("no choice".into()))?;
                        return Ok(choice.message.content);
                    }
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    let body = response.body_mut().read_to_string().unwrap_or_default();
                    let failure = AskError::Status {
                        status,
                        body: body.chars().take(300).collect(),
                        tries,
                    };
                    // Only throttling and the server's own failures are worth another try.
                    if status != 429 && status < 500 {
                        return Err(failure);
                    }
                    (retry_after, failure)
                }
                Err(error) => (
                    None,
                    AskError::Transport {
                        message: error.to_string(),
                        tries,
                    },
                ),
            };
            if tries > self.max_retries {
                return Err(failure);
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            // 0.5 s, 1 s, 2 s, … up to 30 s, or what the teacher asked for.
            let backoff = 0.5 * 2f64.powi(tries as i32 - 1);
            let wait = retry_after.unwrap_or(backoff).clamp(0.0, 30.0);
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}
