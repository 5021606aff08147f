//! A chat message's answer as it streams: the server-sent events of
//! `POST /api/v1/chats/{id}/messages` with `stream: true`, one type for the server that writes
//! them and the dashboard that reads them.

use serde::{Deserialize, Serialize};

/// One server-sent event of a chat message's answer (`POST /api/v1/chats/{id}/messages` with
/// `stream: true`): the event's name is [`ChatStreamEvent::name`], its data the JSON of the
/// variant's value. The server writes them and the dashboard reads them through this one type.
#[derive(Debug, Clone, PartialEq)]
// Documented as the data of an event: one of the variants' values (the event's name says which).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), serde(untagged))]
pub enum ChatStreamEvent {
    /// The next piece of the answer.
    Delta(ChatDelta),
    /// The whole answer, once stored in the chat.
    Done(ChatDone),
    /// Generation or storing the answer failed.
    Error(ChatStreamError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatDelta {
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatDone {
    pub role: String,
    pub content: String,
    /// `stop` (end of answer or a stop sequence) or `length` (max_tokens reached).
    pub finish_reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatStreamError {
    pub message: String,
}

impl ChatStreamEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            ChatStreamEvent::Delta(_) => "delta",
            ChatStreamEvent::Done(_) => "done",
            ChatStreamEvent::Error(_) => "error",
        }
    }

    /// The SSE data.
    pub fn data(&self) -> String {
        let json = match self {
            ChatStreamEvent::Delta(v) => serde_json::to_string(v),
            ChatStreamEvent::Done(v) => serde_json::to_string(v),
            ChatStreamEvent::Error(v) => serde_json::to_string(v),
        };
        // Structs of strings always serialize.
        json.unwrap_or_default()
    }

    /// Reads an event by its name and data; `None` for an unknown name or data that is not its
    /// value.
    pub fn parse(name: &str, data: &str) -> Option<Self> {
        match name {
            "delta" => serde_json::from_str(data).ok().map(ChatStreamEvent::Delta),
            "done" => serde_json::from_str(data).ok().map(ChatStreamEvent::Done),
            "error" => serde_json::from_str(data).ok().map(ChatStreamEvent::Error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_stream_events_read_back_by_name() {
        for event in [
            ChatStreamEvent::Delta(ChatDelta {
                content: "你好".into(),
            }),
            ChatStreamEvent::Done(ChatDone {
                role: "assistant".into(),
                content: "你好！".into(),
                finish_reason: "stop".into(),
            }),
            ChatStreamEvent::Error(ChatStreamError {
                message: "generation failed".into(),
            }),
        ] {
            assert_eq!(
                ChatStreamEvent::parse(event.name(), &event.data()),
                Some(event)
            );
        }
        assert_eq!(ChatStreamEvent::parse("delta", r#"{"text": 1}"#), None);
        assert_eq!(ChatStreamEvent::parse("ping", "{}"), None);
    }
}
