//! Training data for P-Tuning v2, read and preprocessed exactly as THUDM's
//! `ptuning/main.py` does it.
//!
//! - [`records`] reads a JSON-lines file or a JSON array file into [`Record`]s, naming the
//!   file, line (or array element) and field of every bad record;
//! - [`formats`] maps one JSON object to a record: configurable prompt / response / history
//!   columns (the official `--prompt_column` flags), Alpaca, or ShareGPT / OpenAI messages;
//! - [`preprocess`] turns records into `input_ids` / `labels` as `preprocess_function_train`;
//! - [`inspect`] summarises a dataset (token lengths, truncation, one rendered example).
//!
//! The official pipeline drops records whose prompt or response is empty without a word;
//! here they are dropped too (so the features stay identical) but counted in the
//! [`ReadReport`], and with `skip_invalid` every other bad record is listed there as well.

pub mod augment;
pub mod formats;
pub mod inspect;
pub mod near_duplicates;
pub mod preprocess;
pub mod records;

use std::fmt;
use std::path::PathBuf;

pub use formats::DatasetFormat;
pub use inspect::{
    check_dataset, inspect, Example, InspectReport, LengthStats, TokenStats, Truncation, Unusable,
};
pub use preprocess::{
    eval_prompt_ids, preprocess_record, preprocess_train, preprocessing, render_prompt,
    rendered_prompt, Features, PreprocessOptions, Preprocessing, IGNORE_INDEX,
};
pub use records::{parse_records, read_records, ReadReport, Record};

/// Where a record sits in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A JSON-lines record, by 1-based line number.
    Line(usize),
    /// An element of a top-level JSON array: 0-based index and, when it could be found,
    /// the 1-based line where the element starts.
    Element { index: usize, line: Option<usize> },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Element {
                index,
                line: Some(line),
            } => write!(f, "element {index} (line {line})"),
            Location::Element { index, line: None } => write!(f, "element {index}"),
        }
    }
}

/// One problem with one record: where, which field (when a field is at fault) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub location: Location,
    /// A path into the record such as `summary`, `history[1][0]` or `messages[2].role`.
    pub field: Option<String>,
    pub message: String,
}

impl Issue {
    pub(crate) fn new(
        location: Location,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            location,
            field,
            message: message.into(),
        }
    }
}

impl Issue {
    /// The 1-based line the record starts on, when known.
    pub fn line(&self) -> Option<usize> {
        match self.location {
            Location::Line(line) => Some(line),
            Location::Element { line, .. } => line,
        }
    }
}

/// `{"location", "line", "field", "message"}`: how the server's error details and the dashboard
/// list a bad record.
impl serde::Serialize for Issue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Issue", 4)?;
        s.serialize_field("location", &self.location.to_string())?;
        s.serialize_field("line", &self.line())?;
        s.serialize_field("field", &self.field)?;
        s.serialize_field("message", &self.message)?;
        s.end()
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}, field `{field}`: {}", self.location, self.message),
            None => write!(f, "{}: {}", self.location, self.message),
        }
    }
}

/// Everything that can go wrong while reading or preprocessing a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One record is unusable (malformed JSON, invalid UTF-8, missing column, wrong type).
    #[error("{}: {issue}", path.display())]
    Record { path: PathBuf, issue: Issue },
    /// The file as a whole is unusable (a broken JSON array, an undetectable format).
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("invalid preprocessing options: {0}")]
    Options(String),
}
