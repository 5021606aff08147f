//! Reading a dataset file: JSON lines or one JSON array, into [`Record`]s and a [`ReadReport`].
//!
//! The file kind is taken from its content, not its name (the official AdvertiseGen files are
//! JSON lines named `.json`): a file whose first non-blank byte is `[` is a JSON array,
//! anything else is JSON lines. A UTF-8 byte-order mark is ignored, lines may end in `\r\n`,
//! blank lines are counted but are not records.
//!
//! A JSON array is first cut into its elements by a scanner that only follows strings and
//! brackets, and each element is then parsed alone: so a malformed element, or one with
//! invalid UTF-8, is one bad record with its index and line, not the end of the file. Only a
//! broken array structure (unterminated, empty element, trailing text) fails the whole file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::formats::{self, DatasetFormat};
use super::{DataError, Issue, Location};

/// One training example: the current query, its answer, and earlier `(query, answer)` turns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub prompt: String,
    pub response: String,
    pub history: Vec<(String, String)>,
    /// The messages as the file gave them (system messages kept apart), for the `messages` and
    /// `conversations` formats; empty for the others. ChatGLM3 trains on these.
    pub messages: Vec<crate::generation::ChatMessage>,
}

impl Record {
    /// The conversation: the file's messages, or the history, prompt and response as turns.
    pub fn conversation(&self) -> Vec<crate::generation::ChatMessage> {
        use crate::generation::ChatMessage;
        use crate::tokenizer::Role;
        if !self.messages.is_empty() {
            return self.messages.clone();
        }
        let message = |role, content: &str| ChatMessage {
            role,
            content: content.to_owned(),
        };
        let mut out = Vec::with_capacity(2 * self.history.len() + 2);
        for (query, answer) in &self.history {
            out.push(message(Role::User, query));
            out.push(message(Role::Assistant, answer));
        }
        out.push(message(Role::User, &self.prompt));
        out.push(message(Role::Assistant, &self.response));
        out
    }
}

/// What reading a file found, besides the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReport {
    pub path: PathBuf,
    /// The format used: the one asked for, or the detected one for [`DatasetFormat::Auto`]
    /// (still `Auto` when the file holds no JSON object to detect it from).
    pub format: DatasetFormat,
    /// Whether the format has a history column, which makes the official preprocessing render
    /// every prompt with the `[Round i]` template (even when a record's history is empty):
    /// set for `Columns` with a history column, `Messages`, and `Alpaca` when any record has a
    /// `history` key. Pass it as [`PreprocessOptions::use_history`](super::PreprocessOptions).
    pub history_column: bool,
    /// Records in the file: non-blank lines, or array elements.
    pub total: usize,
    /// Records returned.
    pub kept: usize,
    /// Records skipped because they are unusable (only with `skip_invalid`).
    pub skipped_invalid: Vec<Issue>,
    /// Records skipped because the prompt or response is empty, as the official code does.
    pub skipped_empty: Vec<Issue>,
    pub blank_lines: usize,
}

impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file: {}", self.path.display())?;
        writeln!(f, "format: {}", self.format)?;
        writeln!(
            f,
            "records: {} in file, {} kept, {} skipped as invalid, {} skipped as empty ({} blank lines)",
            self.total,
            self.kept,
            self.skipped_invalid.len(),
            self.skipped_empty.len(),
            self.blank_lines
        )?;
        for issue in &self.skipped_invalid {
            writeln!(f, "  skipped (invalid): {issue}")?;
        }
        for issue in &self.skipped_empty {
            writeln!(f, "  skipped (empty): {issue}")?;
        }
        Ok(())
    }
}

/// Reads `path` in `format`. Without `skip_invalid` the first bad record is an error naming the
/// file, its line (or array element) and field; with it, bad records are listed in the report.
/// Records with an empty prompt or response are always skipped and listed.
pub fn read_records(
    path: &Path,
    format: &DatasetFormat,
    skip_invalid: bool,
) -> Result<(Vec<Record>, ReadReport), DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_records(&bytes, path, format, skip_invalid)
}

/// [`read_records`] on bytes already in memory; `path` only names the source in messages.
pub fn parse_records(
    bytes: &[u8],
    path: &Path,
    format: &DatasetFormat,
    skip_invalid: bool,
) -> Result<(Vec<Record>, ReadReport), DataError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let file_error = |message: String| DataError::File {
        path: path.to_path_buf(),
        message,
    };
    let (values, blank_lines) = if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        (split_array(bytes).map_err(file_error)?, 0)
    } else {
        split_lines(bytes)
    };

    let any_history = values
        .iter()
        .any(|(_, v)| matches!(v, Ok(Value::Object(o)) if o.contains_key("history")));
    let mut resolved = format.clone();
    let mut report = ReadReport {
        path: path.to_path_buf(),
        format: format.clone(),
        history_column: false,
        total: values.len(),
        kept: 0,
        skipped_invalid: Vec::new(),
        skipped_empty: Vec::new(),
        blank_lines,
    };
    let mut records = Vec::with_capacity(values.len());
    for (location, value) in values {
        let extracted = match value {
            Ok(Value::Object(obj)) => {
                if resolved == DatasetFormat::Auto {
                    resolved = formats::detect(&obj, any_history)
                        .map_err(|m| file_error(format!("{location}: {m}")))?;
                }
                formats::extract(&resolved, &obj)
                    .map_err(|(field, message)| Issue::new(location, Some(field), message))
            }
            Ok(other) => {
                let message = format!("expected a JSON object, found {}", formats::kind(&other));
                Err(Issue::new(location, None, message))
            }
            Err(issue) => Err(issue),
        };
        let extracted = match extracted {
            Ok(e) => e,
            Err(issue) if skip_invalid => {
                report.skipped_invalid.push(issue);
                continue;
            }
            Err(issue) => {
                return Err(DataError::Record {
                    path: path.to_path_buf(),
                    issue,
                })
            }
        };
        // The official `if examples[prompt_column][i] and examples[response_column][i]`.
        let empty = if extracted.record.prompt.is_empty() {
            Some(extracted.prompt_field)
        } else if extracted.record.response.is_empty() {
            Some(extracted.response_field)
        } else {
            None
        };
        match empty {
            Some(field) => report
                .skipped_empty
                .push(Issue::new(location, Some(field), "empty")),
            None => records.push(extracted.record),
        }
    }
    report.kept = records.len();
    report.history_column = match &resolved {
        DatasetFormat::Columns { history, .. } => history.is_some(),
        DatasetFormat::Alpaca => any_history,
        DatasetFormat::Messages => true,
        DatasetFormat::Auto => false,
    };
    report.format = resolved;
    Ok((records, report))
}

type Parsed = Vec<(Location, Result<Value, Issue>)>;

/// JSON lines: one value per non-blank line, each with its own parse result.
fn split_lines(bytes: &[u8]) -> (Parsed, usize) {
    let mut values = Vec::new();
    let mut blank = 0;
    let pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let count = pieces.len();
    for (i, line) in pieces.into_iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let location = Location::Line(i + 1);
        if line.iter().all(u8::is_ascii_whitespace) {
            // The newline that ends the last line leaves an empty piece that is no line.
            if i + 1 < count || !line.is_empty() {
                blank += 1;
            }
            continue;
        }
        values.push((location, parse_value(line, location)));
    }
    (values, blank)
}

fn parse_value(bytes: &[u8], location: Location) -> Result<Value, Issue> {
    if let Err(e) = std::str::from_utf8(bytes) {
        let message = format!(
            "invalid UTF-8 at byte {} of the record",
            e.valid_up_to() + 1
        );
        return Err(Issue::new(location, None, message));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's own text ends in "at line L column C", which would read as a file line.
        let text = e.to_string();
        let text = text.split(" at line ").next().unwrap_or(&text);
        let message = format!(
            "malformed JSON: {text} (line {}, column {} of the record)",
            e.line(),
            e.column()
        );
        Issue::new(location, None, message)
    })
}

/// Cuts a top-level JSON array into elements and parses each one alone.
fn split_array(bytes: &[u8]) -> Result<Parsed, String> {
    let line_at = |offset: usize| 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
    let open = bytes.iter().position(|&b| b == b'[').unwrap_or(0);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut start: Option<usize> = None;
    let mut close = None;
    for (i, &b) in bytes.iter().enumerate().skip(open + 1) {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b',' | b']' if depth == 0 => {
                match start.take() {
                    Some(s) => spans.push((s, i)),
                    // `[]` is an empty array; `[,` and `,]` are holes.
                    None if b == b']' && spans.is_empty() => {}
                    None => return Err(format!("line {}: empty array element", line_at(i))),
                }
                if b == b']' {
                    close = Some(i);
                    break;
                }
            }
            b'}' | b']' if depth == 0 => {
                return Err(format!("line {}: unexpected `{}`", line_at(i), b as char));
            }
            _ => {
                start.get_or_insert(i);
                match b {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth -= 1,
                    _ => {}
                }
            }
        }
    }
    let Some(close) = close else {
        let what = if in_string {
            "an unterminated string"
        } else {
            "an unterminated array"
        };
        return Err(format!("the JSON array ends in {what}"));
    };
    if let Some(i) = bytes[close + 1..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
    {
        return Err(format!(
            "line {}: text after the end of the JSON array",
            line_at(close + 1 + i)
        ));
    }
    // Lines counted incrementally: the spans are in file order.
    let (mut line, mut counted) = (1, 0);
    let mut values = Vec::with_capacity(spans.len());
    for (index, (s, e)) in spans.into_iter().enumerate() {
        line += bytes[counted..s].iter().filter(|&&b| b == b'\n').count();
        counted = s;
        let location = Location::Element {
            index,
            line: Some(line),
        };
        values.push((location, parse_value(&bytes[s..e], location)));
    }
    Ok(values)
}
