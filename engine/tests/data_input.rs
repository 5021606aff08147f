//! Reading training records as `ptuning/main.py` would get them: every kind of bad input must
//! name the file, the line (or array element) and the field; `skip_invalid` lists what it
//! skips; empty prompts and responses are skipped and counted; Alpaca and messages formats.

mod common;

use std::path::Path;

use common::fixture_dir;
use glmtune_engine::data::{
    parse_records, read_records, DataError, DatasetFormat, Issue, Location, ReadReport, Record,
};

fn parse(
    text: &[u8],
    format: &DatasetFormat,
    skip: bool,
) -> Result<(Vec<Record>, ReadReport), DataError> {
    parse_records(text, Path::new("mem.jsonl"), format, skip)
}

/// The issue of a failed read; panics (failing the test) on success or another error kind.
fn issue(text: &[u8], format: &DatasetFormat) -> Issue {
    match parse(text, format, false) {
        Err(DataError::Record { path, issue }) => {
            assert_eq!(path, Path::new("mem.jsonl"));
            issue
        }
        other => panic!("expected a record error, got {other:?}"),
    }
}

fn cols() -> DatasetFormat {
    DatasetFormat::columns("q", "a", Some("h"))
}

fn record(prompt: &str, response: &str, history: &[(&str, &str)]) -> Record {
    Record {
        prompt: prompt.into(),
        response: response.into(),
        history: history
            .iter()
            .map(|(q, a)| (q.to_string(), a.to_string()))
            .collect(),
        ..Record::default()
    }
}

#[test]
fn malformed_json_line_names_file_and_line() {
    let text = b"{\"q\":\"a\",\"a\":\"b\",\"h\":[]}\n{\"q\": \"x\", \"a\": tru}\n";
    let i = issue(text, &cols());
    assert_eq!(i.location, Location::Line(2));
    assert_eq!(i.field, None);
    assert!(i.message.starts_with("malformed JSON"), "{}", i.message);
    let err = parse(text, &cols(), false).unwrap_err().to_string();
    assert!(
        err.starts_with("mem.jsonl: line 2: malformed JSON"),
        "{err}"
    );
    assert!(
        !err.contains("at line 1"),
        "serde's record-relative line must not read as the file line: {err}"
    );
}

#[test]
fn missing_column_and_wrong_types_name_the_field() {
    let cases: [(&str, &str, &str); 7] = [
        (r#"{"q":"x","h":[]}"#, "a", "missing"),
        (r#"{"q":"x","a":"y"}"#, "h", "missing"),
        (
            r#"{"q":5,"a":"y","h":[]}"#,
            "q",
            "expected a string, found a number",
        ),
        (
            r#"{"q":"x","a":["y"],"h":[]}"#,
            "a",
            "expected a string, found a list",
        ),
        (
            r#"{"q":"x","a":"y","h":"z"}"#,
            "h",
            "expected a list of [query, answer] pairs, found a string",
        ),
        (
            r#"{"q":"x","a":"y","h":[["p"]]}"#,
            "h[0]",
            "expected a [query, answer] pair, found a list of 1 items",
        ),
        (
            r#"{"q":"x","a":"y","h":[["p","r"],["p",{}]]}"#,
            "h[1][1]",
            "expected a string, found an object",
        ),
    ];
    for (line, field, message) in cases {
        let text = format!("\n{line}\n");
        let i = issue(text.as_bytes(), &cols());
        assert_eq!(i.location, Location::Line(2), "{line}");
        assert_eq!(i.field.as_deref(), Some(field), "{line}");
        assert_eq!(i.message, message, "{line}");
    }
    let i = issue(b"[1, 2]\n", &cols());
    assert_eq!(
        i.location,
        Location::Element {
            index: 0,
            line: Some(1)
        }
    );
    assert_eq!(i.message, "expected a JSON object, found a number");
    let i = issue(b"\"text\"\n", &cols());
    assert_eq!(
        (i.location, i.message.as_str()),
        (Location::Line(1), "expected a JSON object, found a string")
    );
}

#[test]
fn invalid_utf8_is_a_bad_record() {
    let text = b"{\"q\":\"a\",\"a\":\"b\",\"h\":[]}\r\n\n{\"q\":\"\xff\",\"a\":\"b\",\"h\":[]}\n";
    let i = issue(text, &cols());
    assert_eq!(i.location, Location::Line(3));
    assert!(
        i.message.contains("invalid UTF-8 at byte 7"),
        "{}",
        i.message
    );
    let (records, report) = parse(text, &cols(), true).unwrap();
    assert_eq!(
        (
            records.len(),
            report.blank_lines,
            report.skipped_invalid.len()
        ),
        (1, 1, 1)
    );
}

#[test]
fn json_array_errors_give_element_index_and_line() {
    let text = b"\xEF\xBB\xBF[\n  {\"q\": \"a\", \"a\": \"b\", \"h\": []},\n  {\"q\": \"c\",\n   \"h\": []},\n  {\"q\": \"e\", \"a\": \"f]\", \"h\": [[\"x\", \"y\"]]}\n]\n";
    let i = issue(text, &cols());
    assert_eq!(
        i.location,
        Location::Element {
            index: 1,
            line: Some(3)
        }
    );
    assert_eq!(i.field.as_deref(), Some("a"));
    let err = parse(text, &cols(), false).unwrap_err().to_string();
    assert_eq!(err, "mem.jsonl: element 1 (line 3), field `a`: missing");

    let (records, report) = parse(text, &cols(), true).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1], record("e", "f]", &[("x", "y")]));
    assert_eq!(report.total, 3);
    assert_eq!(
        report.skipped_invalid[0].location,
        Location::Element {
            index: 1,
            line: Some(3)
        }
    );

    let bad = b"[{\"q\":\"a\",\"a\":\"b\",\"h\":[]},\n {\"q\":\"\xfe\"}, {\"q\": nope}]";
    let (_, report) = parse(bad, &cols(), true).unwrap();
    let found: Vec<(Location, bool)> = report
        .skipped_invalid
        .iter()
        .map(|i| (i.location, i.message.contains("UTF-8")))
        .collect();
    assert_eq!(
        found,
        [
            (
                Location::Element {
                    index: 1,
                    line: Some(2)
                },
                true
            ),
            (
                Location::Element {
                    index: 2,
                    line: Some(2)
                },
                false
            )
        ]
    );

    for (broken, needle) in [
        (&b"[{\"q\":\"a\"}"[..], "unterminated array"),
        (b"[{\"q\":\"a}]", "unterminated string"),
        (b"[{\"q\":\"a\"},,{}]", "line 1: empty array element"),
        (b"[{}]\n{}", "line 2: text after the end"),
    ] {
        match parse(broken, &cols(), true) {
            Err(DataError::File { message, .. }) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected a file error for {broken:?}, got {other:?}"),
        }
    }
    assert_eq!(parse(b" [ ] ", &cols(), false).unwrap().1.total, 0);
}

#[test]
fn skip_invalid_reports_every_skipped_line_and_empty_records() {
    let text = concat!(
        "{\"q\":\"ok1\",\"a\":\"r1\",\"h\":[]}\n",
        "{not json}\n",
        "{\"q\":\"\",\"a\":\"r\",\"h\":[]}\n",
        "{\"q\":\"x\",\"a\":null,\"h\":[]}\n",
        "{\"q\":\"x\",\"h\":[]}\n",
        "   \n",
        "{\"q\":\"ok2\",\"a\":\"r2\",\"h\":[[\"p\",\"s\"]]}\n",
    );
    let (records, report) = parse(text.as_bytes(), &cols(), true).unwrap();
    assert_eq!(
        records,
        [record("ok1", "r1", &[]), record("ok2", "r2", &[("p", "s")])]
    );
    assert_eq!((report.total, report.kept, report.blank_lines), (6, 2, 1));
    let invalid: Vec<(Location, Option<&str>)> = report
        .skipped_invalid
        .iter()
        .map(|i| (i.location, i.field.as_deref()))
        .collect();
    assert_eq!(
        invalid,
        [(Location::Line(2), None), (Location::Line(5), Some("a"))]
    );
    let empty: Vec<(Location, Option<&str>)> = report
        .skipped_empty
        .iter()
        .map(|i| (i.location, i.field.as_deref()))
        .collect();
    assert_eq!(
        empty,
        [
            (Location::Line(3), Some("q")),
            (Location::Line(4), Some("a"))
        ]
    );
    let shown = report.to_string();
    assert!(
        shown.contains("6 in file, 2 kept, 2 skipped as invalid, 2 skipped as empty"),
        "{shown}"
    );
    assert!(
        shown.contains("skipped (invalid): line 5, field `a`: missing"),
        "{shown}"
    );

    // Without skip_invalid the first bad line stops the read; empty records never do.
    assert_eq!(issue(text.as_bytes(), &cols()).location, Location::Line(2));
    let (records, report) = parse(b"{\"q\":\"\",\"a\":\"\",\"h\":[]}", &cols(), false).unwrap();
    assert!(records.is_empty());
    assert_eq!(report.skipped_empty.len(), 1);
}

#[test]
fn alpaca_prompt_joins_instruction_and_input() {
    let text = concat!(
        "{\"instruction\":\"翻译\",\"input\":\"hello\",\"output\":\"你好\"}\n",
        "{\"instruction\":\"讲个笑话\",\"input\":\"\",\"output\":\"好的\",\"history\":[[\"在吗\",\"在\"]]}\n",
        "{\"instruction\":\"总结\",\"output\":\"无\"}\n",
        "{\"instruction\":\"\",\"input\":\"x\",\"output\":\"y\"}\n",
    );
    let (records, report) = parse(text.as_bytes(), &DatasetFormat::Auto, false).unwrap();
    assert_eq!(report.format, DatasetFormat::Alpaca);
    assert!(
        report.history_column,
        "a history key in any record configures the column"
    );
    assert_eq!(
        records,
        [
            record("翻译\nhello", "你好", &[]),
            record("讲个笑话", "好的", &[("在吗", "在")]),
            record("总结", "无", &[])
        ]
    );
    assert_eq!(
        report.skipped_empty[0].field.as_deref(),
        Some("instruction")
    );
    let (_, report) = parse(
        b"{\"instruction\":\"a\",\"output\":\"b\"}",
        &DatasetFormat::Alpaca,
        false,
    )
    .unwrap();
    assert!(!report.history_column);
    let i = issue(
        b"{\"instruction\":\"a\",\"input\":3,\"output\":\"b\"}",
        &DatasetFormat::Alpaca,
    );
    assert_eq!(i.field.as_deref(), Some("input"));
}

#[test]
fn messages_last_pair_is_the_example() {
    let text = concat!(
        r#"{"messages":[{"role":"system","content":"你是医生"},{"role":"user","content":"q0"},"#,
        r#"{"role":"assistant","content":"a0"},{"role":"user","content":"q1"},{"role":"assistant","content":"a1"}]}"#,
        "\n",
        r#"{"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}]}"#,
        "\n"
    );
    let (records, report) = parse(text.as_bytes(), &DatasetFormat::Auto, false).unwrap();
    assert_eq!(report.format, DatasetFormat::Messages);
    assert!(report.history_column);
    let without_messages: Vec<Record> = records
        .iter()
        .map(|r| Record {
            messages: Vec::new(),
            ..r.clone()
        })
        .collect();
    assert_eq!(
        without_messages,
        [
            record("q1", "a1", &[("你是医生\nq0", "a0")]),
            record("hi", "hello", &[]),
        ]
    );
    // The messages themselves are kept, the system one apart (ChatGLM3 trains on them).
    let roles: Vec<&str> = records[0]
        .messages
        .iter()
        .map(|m| m.role.as_str())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user", "assistant"]);
    assert_eq!(records[0].messages[0].content, "你是医生");
    assert_eq!(records[1].conversation(), records[1].messages);

    let bad: [(&str, &str, &str); 5] = [
        (
            r#"{"messages":[{"role":"user","content":"q"}]}"#,
            "messages",
            "end with an assistant",
        ),
        (
            r#"{"messages":[{"role":"user","content":"q"},{"role":"user","content":"q"}]}"#,
            "messages[1]",
            "expected a assistant message",
        ),
        (
            r#"{"messages":[{"role":"tool","content":"q"}]}"#,
            "messages[0].role",
            "unsupported role `tool`",
        ),
        (
            r#"{"conversations":[{"from":"human"}]}"#,
            "conversations[0].value",
            "missing",
        ),
        (
            r#"{"messages":{}}"#,
            "messages",
            "expected a list of messages, found an object",
        ),
    ];
    for (line, field, needle) in bad {
        let i = issue(line.as_bytes(), &DatasetFormat::Messages);
        assert_eq!(i.field.as_deref(), Some(field), "{line}");
        assert!(i.message.contains(needle), "{line}: {}", i.message);
    }
    let empty = r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":""}]}"#;
    let (_, report) = parse(empty.as_bytes(), &DatasetFormat::Messages, false).unwrap();
    assert_eq!(
        report.skipped_empty[0].field.as_deref(),
        Some("messages[1].content")
    );
}

#[test]
fn format_detection_and_file_errors() {
    let (_, report) = parse(
        b"{\"prompt\":\"p\",\"response\":\"r\"}",
        &DatasetFormat::Auto,
        false,
    )
    .unwrap();
    assert_eq!(
        report.format,
        DatasetFormat::columns("prompt", "response", None)
    );
    assert!(!report.history_column);
    // Detection uses the first JSON object; a bad first line is skipped with skip_invalid.
    let (records, _) = parse(
        b"oops\n{\"content\":\"c\",\"summary\":\"s\"}",
        &DatasetFormat::Auto,
        true,
    )
    .unwrap();
    assert_eq!(records, [record("c", "s", &[])]);
    match parse(b"{\"text\":\"t\"}", &DatasetFormat::Auto, true) {
        Err(DataError::File { message, .. }) => {
            assert!(message.contains("cannot detect"), "{message}")
        }
        other => panic!("expected a detection error, got {other:?}"),
    }
    let missing = fixture_dir().join("no-such-file.jsonl");
    let err = read_records(&missing, &DatasetFormat::Auto, false).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
    assert!(err.to_string().contains("no-such-file.jsonl"), "{err}");
}
