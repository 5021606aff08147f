//! A dataset's [`ReadOptions`] (the shared, serialized form: the API's, the stored datasets', a
//! training job's, the CLI flags') and the engine's [`DatasetFormat`] that reads the records.

use glmtune_engine::data::DatasetFormat;
use glmtune_shared::api::{ReadOptions, RecordFormat};

/// The reader the options ask for; column names imply the `columns` format.
pub fn format_of(options: &ReadOptions) -> Result<DatasetFormat, String> {
    let columns = options.prompt_column.is_some()
        || options.response_column.is_some()
        || options.history_column.is_some();
    match (options.format, columns) {
        (RecordFormat::Auto, false) => Ok(DatasetFormat::Auto),
        (RecordFormat::Auto | RecordFormat::Columns, _) => {
            match (&options.prompt_column, &options.response_column) {
                (Some(prompt), Some(response)) => Ok(DatasetFormat::columns(
                    prompt,
                    response,
                    options.history_column.as_deref(),
                )),
                _ => Err("format columns needs both prompt_column and response_column".into()),
            }
        }
        (format, true) => Err(format!(
            "prompt_column/response_column/history_column go with format columns, not {format}"
        )),
        (RecordFormat::Alpaca, false) => Ok(DatasetFormat::Alpaca),
        (RecordFormat::Messages, false) => Ok(DatasetFormat::Messages),
    }
}

/// The options that read records as `format` does (a detected format, stored with its dataset).
pub fn options_of(format: &DatasetFormat) -> ReadOptions {
    let named = |format| ReadOptions {
        format,
        ..ReadOptions::default()
    };
    match format {
        DatasetFormat::Auto => named(RecordFormat::Auto),
        DatasetFormat::Columns {
            prompt,
            response,
            history,
        } => ReadOptions {
            format: RecordFormat::Columns,
            prompt_column: Some(prompt.clone()),
            response_column: Some(response.clone()),
            history_column: history.clone(),
        },
        DatasetFormat::Alpaca => named(RecordFormat::Alpaca),
        DatasetFormat::Messages => named(RecordFormat::Messages),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_formats_round_trip_and_bad_pairs_are_refused() {
        for format in [
            DatasetFormat::Auto,
            DatasetFormat::columns("content", "summary", Some("history")),
            DatasetFormat::Alpaca,
            DatasetFormat::Messages,
        ] {
            assert_eq!(format_of(&options_of(&format)).unwrap(), format);
        }
        let only_prompt = ReadOptions {
            prompt_column: Some("q".into()),
            ..ReadOptions::default()
        };
        assert!(format_of(&only_prompt).unwrap_err().contains("both"));
        let alpaca_with_columns = ReadOptions {
            format: RecordFormat::Alpaca,
            history_column: Some("h".into()),
            ..ReadOptions::default()
        };
        assert!(format_of(&alpaca_with_columns)
            .unwrap_err()
            .contains("not alpaca"));
    }
}
