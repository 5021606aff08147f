//! Dataset formats: how one JSON object becomes a prompt, a response and a history.
//!
//! - [`DatasetFormat::Columns`] is the official `ptuning/main.py` layout: `--prompt_column`,
//!   `--response_column` and optional `--history_column` (a list of `[query, answer]` pairs).
//! - [`DatasetFormat::Alpaca`]: `instruction`, optional `input`, `output`, optional `history`.
//!   The prompt is `instruction`, plus `"\n" + input` when `input` is non-empty; this is the
//!   rule of the common ChatGLM fine-tuning forks (hiyouga's ChatGLM-Efficient-Tuning /
//!   LLaMA-Factory map `instruction`→prompt, `input`→query and join them with one newline),
//!   not the English Alpaca template, which ChatGLM was never trained on.
//! - [`DatasetFormat::Messages`]: OpenAI `messages` (`role`/`content`) or ShareGPT
//!   `conversations` (`from`/`value`). Leading system messages are joined with `"\n"` and put,
//!   followed by `"\n"`, before the first user message (ChatGLM-6B has no system role); the
//!   rest must alternate user, assistant and end with an assistant message: the last user
//!   message is the prompt, the last assistant message the response, earlier pairs the history.
//!
//! A JSON `null` in a text field reads as the empty string, which the official code treats as
//! empty (falsy) and skips; a missing field or any other type is an error.

use serde_json::{Map, Value};

use super::records::Record;

/// How records are laid out; [`DatasetFormat::Auto`] picks one from the first record's keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DatasetFormat {
    /// `messages` or `conversations` → [`Messages`](Self::Messages); `instruction` + `output`
    /// → [`Alpaca`](Self::Alpaca); `content` + `summary` (the official AdvertiseGen example)
    /// or `prompt` + `response` → [`Columns`](Self::Columns), with a `history` column when
    /// any record has a `history` key.
    #[default]
    Auto,
    Columns {
        prompt: String,
        response: String,
        history: Option<String>,
    },
    Alpaca,
    Messages,
}

impl DatasetFormat {
    /// The official column layout, e.g. `columns("content", "summary", Some("history"))`.
    pub fn columns(prompt: &str, response: &str, history: Option<&str>) -> Self {
        Self::Columns {
            prompt: prompt.to_string(),
            response: response.to_string(),
            history: history.map(str::to_string),
        }
    }
}

impl std::fmt::Display for DatasetFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Columns {
                prompt,
                response,
                history,
            } => {
                write!(f, "columns (prompt `{prompt}`, response `{response}`")?;
                match history {
                    Some(h) => write!(f, ", history `{h}`)"),
                    None => write!(f, ", no history)"),
                }
            }
            Self::Alpaca => write!(f, "alpaca (instruction/input/output/history)"),
            Self::Messages => write!(f, "messages (role/content or from/value)"),
        }
    }
}

/// Picks the format from the first record's keys; `any_history` says whether any record of the
/// file has a `history` key (as the `datasets` loader unifies columns over all rows).
pub(crate) fn detect(
    first: &Map<String, Value>,
    any_history: bool,
) -> Result<DatasetFormat, String> {
    let has = |k: &str| first.contains_key(k);
    let history = any_history.then(|| "history".to_string());
    if has("messages") || has("conversations") {
        Ok(DatasetFormat::Messages)
    } else if has("instruction") && has("output") {
        Ok(DatasetFormat::Alpaca)
    } else if has("content") && has("summary") {
        Ok(DatasetFormat::columns(
            "content",
            "summary",
            history.as_deref(),
        ))
    } else if has("prompt") && has("response") {
        Ok(DatasetFormat::columns(
            "prompt",
            "response",
            history.as_deref(),
        ))
    } else {
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        Err(format!(
            "cannot detect the dataset format from the keys {keys:?}; give the prompt/response \
             columns or the format"
        ))
    }
}

/// A record plus the names of the fields its prompt and response came from, so that an
/// empty one can be reported by name.
pub(crate) struct Extracted {
    pub record: Record,
    pub prompt_field: String,
    pub response_field: String,
}

/// A field-level failure: the path of the field and what is wrong with it.
pub(crate) type FieldError = (String, String);

/// Reads one record in `format` (which must not be `Auto`).
pub(crate) fn extract(
    format: &DatasetFormat,
    obj: &Map<String, Value>,
) -> Result<Extracted, FieldError> {
    match format {
        DatasetFormat::Columns {
            prompt,
            response,
            history,
        } => {
            let history = match history {
                Some(col) => pairs(col, required(obj, col)?)?,
                None => Vec::new(),
            };
            Ok(Extracted {
                record: Record {
                    prompt: text(prompt, required(obj, prompt)?)?,
                    response: text(response, required(obj, response)?)?,
                    history,
                    messages: Vec::new(),
                },
                prompt_field: prompt.clone(),
                response_field: response.clone(),
            })
        }
        DatasetFormat::Alpaca => alpaca(obj),
        DatasetFormat::Messages => messages(obj),
        DatasetFormat::Auto => Err((String::new(), "the dataset format was not resolved".into())),
    }
}

fn alpaca(obj: &Map<String, Value>) -> Result<Extracted, FieldError> {
    let instruction = text("instruction", required(obj, "instruction")?)?;
    let input = match obj.get("input") {
        Some(v) => text("input", v)?,
        None => String::new(),
    };
    let history = match obj.get("history") {
        Some(Value::Null) | None => Vec::new(),
        Some(v) => pairs("history", v)?,
    };
    // An empty instruction stays empty even with an input, so that the record is skipped as
    // the forks skip an empty prompt column.
    let prompt = if input.is_empty() || instruction.is_empty() {
        instruction
    } else {
        format!("{instruction}\n{input}")
    };
    Ok(Extracted {
        record: Record {
            prompt,
            response: text("output", required(obj, "output")?)?,
            history,
            messages: Vec::new(),
        },
        prompt_field: "instruction".into(),
        response_field: "output".into(),
    })
}

#[derive(PartialEq)]
enum Role {
    System,
    User,
    Assistant,
}

fn messages(obj: &Map<String, Value>) -> Result<Extracted, FieldError> {
    let key = if obj.contains_key("messages") {
        "messages"
    } else {
        "conversations"
    };
    let value = required(obj, key)?;
    let list = value.as_array().ok_or_else(|| {
        (
            key.to_string(),
            format!("expected a list of messages, found {}", kind(value)),
        )
    })?;
    let mut turns: Vec<(Role, String, String)> = Vec::with_capacity(list.len());
    for (i, message) in list.iter().enumerate() {
        let path = format!("{key}[{i}]");
        let m = message.as_object().ok_or_else(|| {
            (
                path.clone(),
                format!("expected an object, found {}", kind(message)),
            )
        })?;
        let (role_key, content_key) = if m.contains_key("from") {
            ("from", "value")
        } else {
            ("role", "content")
        };
        let role_path = format!("{path}.{role_key}");
        let role = match text(&role_path, required_at(m, role_key, &role_path)?)?.as_str() {
            "system" => Role::System,
            "user" | "human" => Role::User,
            "assistant" | "gpt" | "bot" | "chatgpt" | "model" => Role::Assistant,
            other => return Err((role_path, format!("unsupported role `{other}`"))),
        };
        let content_path = format!("{path}.{content_key}");
        let content = text(&content_path, required_at(m, content_key, &content_path)?)?;
        turns.push((role, content, content_path));
    }
    let messages = turns
        .iter()
        .map(|(role, content, _)| crate::generation::ChatMessage {
            role: match role {
                Role::System => crate::tokenizer::Role::System,
                Role::User => crate::tokenizer::Role::User,
                Role::Assistant => crate::tokenizer::Role::Assistant,
            },
            content: content.clone(),
        })
        .collect();
    let system_count = turns.iter().take_while(|t| t.0 == Role::System).count();
    let system: Vec<&str> = turns[..system_count].iter().map(|t| t.1.as_str()).collect();
    let rest = &turns[system_count..];
    for (j, (role, _, path)) in rest.iter().enumerate() {
        let expected = if j.is_multiple_of(2) {
            Role::User
        } else {
            Role::Assistant
        };
        if *role != expected {
            let field = path.rsplit_once('.').map_or(path.as_str(), |(p, _)| p);
            let want = if j.is_multiple_of(2) {
                "user"
            } else {
                "assistant"
            };
            return Err((
                field.to_string(),
                format!("expected a {want} message (after system messages, turns alternate user, assistant)"),
            ));
        }
    }
    if rest.is_empty() || rest.len() % 2 == 1 {
        return Err((
            key.to_string(),
            "the conversation must end with an assistant message".into(),
        ));
    }
    let mut pairs: Vec<(String, String)> = rest
        .chunks(2)
        .map(|c| (c[0].1.clone(), c[1].1.clone()))
        .collect();
    if !system.is_empty() {
        pairs[0].0 = format!("{}\n{}", system.join("\n"), pairs[0].0);
    }
    let n = rest.len();
    let prompt_field = rest[n - 2].2.clone();
    let response_field = rest[n - 1].2.clone();
    let Some((prompt, response)) = pairs.pop() else {
        return Err((
            key.to_string(),
            "the conversation has no user message".into(),
        ));
    };
    Ok(Extracted {
        record: Record {
            prompt,
            response,
            history: pairs,
            messages,
        },
        prompt_field,
        response_field,
    })
}

fn required<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a Value, FieldError> {
    required_at(obj, key, key)
}

fn required_at<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a Value, FieldError> {
    obj.get(key)
        .ok_or_else(|| (path.to_string(), "missing".to_string()))
}

/// A text field: a string, or `null` read as empty.
fn text(path: &str, value: &Value) -> Result<String, FieldError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        other => Err((
            path.to_string(),
            format!("expected a string, found {}", kind(other)),
        )),
    }
}

/// A history: a list of `[query, answer]` string pairs, as the official code unpacks them.
fn pairs(path: &str, value: &Value) -> Result<Vec<(String, String)>, FieldError> {
    let list = value.as_array().ok_or_else(|| {
        (
            path.to_string(),
            format!(
                "expected a list of [query, answer] pairs, found {}",
                kind(value)
            ),
        )
    })?;
    let mut out = Vec::with_capacity(list.len());
    for (i, pair) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match pair.as_array().map(Vec::as_slice) {
            Some([q, a]) => {
                out.push((text(&format!("{at}[0]"), q)?, text(&format!("{at}[1]"), a)?))
            }
            _ => {
                return Err((
                    at,
                    format!("expected a [query, answer] pair, found {}", describe(pair)),
                ))
            }
        }
    }
    Ok(out)
}

/// The JSON type of a value, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Array(a) => format!("a list of {} items", a.len()),
        other => kind(other).to_string(),
    }
}
