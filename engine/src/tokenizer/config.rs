//! `tokenizer_config.json`: the keyword arguments `ChatGLMTokenizer.__init__` receives.
//!
//! Missing keys take the official constructor's defaults — notably `num_image_tokens`
//! is 20000 unless the file says otherwise. Keys of the wrong type are errors rather
//! than Python's truthiness guesses.

use serde_json::{Map, Value};

/// A special token as transformers 4.33 holds it. A plain string strips whitespace on
/// both sides of its occurrences in text; an `AddedToken` object only where it says so.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpecialToken {
    pub content: String,
    pub lstrip: bool,
    pub rstrip: bool,
    /// Given as an `AddedToken` object rather than a plain string.
    pub added_token: bool,
}

impl SpecialToken {
    fn plain(s: &str) -> Self {
        Self {
            content: s.to_string(),
            lstrip: true,
            rstrip: true,
            added_token: false,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TokenizerConfig {
    pub do_lower_case: bool,
    pub remove_space: bool,
    pub num_image_tokens: u32,
    pub bos: Option<SpecialToken>,
    pub eos: Option<SpecialToken>,
    pub unk: Option<SpecialToken>,
    pub sep: Option<SpecialToken>,
    pub pad: Option<SpecialToken>,
    pub cls: Option<SpecialToken>,
    pub mask: Option<SpecialToken>,
    pub additional: Vec<SpecialToken>,
    pub gmask: String,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            do_lower_case: false,
            remove_space: false,
            num_image_tokens: 20000,
            bos: Some(SpecialToken::plain("<sop>")),
            eos: Some(SpecialToken::plain("<eop>")),
            unk: Some(SpecialToken::plain("<unk>")),
            sep: None,
            pad: Some(SpecialToken::plain("<pad>")),
            cls: None,
            mask: Some(SpecialToken::plain("[MASK]")),
            additional: Vec::new(),
            gmask: "[gMASK]".to_string(),
        }
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("`{key}` must be true or false, found {v}")),
    }
}

fn token(key: &str, v: &Value) -> Result<Option<SpecialToken>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(SpecialToken::plain(s))),
        // transformers serializes AddedToken as {"__type": "AddedToken", "content": ..., ...}.
        Value::Object(o) => {
            let content = o
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`{key}` is an object without a string `content`"))?;
            let flag = |name| get_bool(o, name, false).map_err(|e| format!("`{key}`: {e}"));
            Ok(Some(SpecialToken {
                content: content.to_string(),
                lstrip: flag("lstrip")?,
                rstrip: flag("rstrip")?,
                added_token: true,
            }))
        }
        v => Err(format!(
            "`{key}` must be a string or an AddedToken object, found {v}"
        )),
    }
}

fn get_token(
    obj: &Map<String, Value>,
    key: &str,
    default: Option<SpecialToken>,
) -> Result<Option<SpecialToken>, String> {
    obj.get(key).map_or(Ok(default), |v| token(key, v))
}

/// Parses the file's text; `None` (no file) gives the constructor defaults.
/// The error is a reason without the file name.
pub(crate) fn parse(json: Option<&str>) -> Result<TokenizerConfig, String> {
    let d = TokenizerConfig::default();
    let Some(json) = json else { return Ok(d) };
    let value: Value = serde_json::from_str(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("the top level must be a JSON object".into());
    };
    let num_image_tokens = match obj.get("num_image_tokens") {
        None => d.num_image_tokens,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                format!("`num_image_tokens` must be a non-negative integer, found {v}")
            })?,
    };
    let additional = match obj.get("additional_special_tokens") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| token("additional_special_tokens", v).transpose())
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(format!(
                "`additional_special_tokens` must be a list, found {v}"
            ))
        }
    };
    let gmask = match get_token(&obj, "gmask_token", None)? {
        Some(t) => t.content,
        None => d.gmask.clone(),
    };
    Ok(TokenizerConfig {
        do_lower_case: get_bool(&obj, "do_lower_case", d.do_lower_case)?,
        remove_space: get_bool(&obj, "remove_space", d.remove_space)?,
        num_image_tokens,
        bos: get_token(&obj, "bos_token", d.bos)?,
        eos: get_token(&obj, "eos_token", d.eos)?,
        unk: get_token(&obj, "unk_token", d.unk)?,
        sep: get_token(&obj, "sep_token", d.sep)?,
        pad: get_token(&obj, "pad_token", d.pad)?,
        cls: get_token(&obj, "cls_token", d.cls)?,
        mask: get_token(&obj, "mask_token", d.mask)?,
        additional,
        gmask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = parse(None).unwrap();
        assert_eq!(c.num_image_tokens, 20000);
        let c = parse(Some(
            r#"{"num_image_tokens": 0, "do_lower_case": true,
            "eos_token": {"__type": "AddedToken", "content": "<e>", "rstrip": true}}"#,
        ))
        .unwrap();
        assert_eq!(c.num_image_tokens, 0);
        assert!(c.do_lower_case);
        assert_eq!(
            c.eos,
            Some(SpecialToken {
                content: "<e>".into(),
                lstrip: false,
                rstrip: true,
                added_token: true,
            })
        );
        assert_eq!(c.bos, Some(SpecialToken::plain("<sop>")));
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(parse(Some("[1]")).is_err());
        assert!(parse(Some(r#"{"remove_space": "yes"}"#)).is_err());
        assert!(parse(Some(r#"{"num_image_tokens": -1}"#)).is_err());
        assert!(parse(Some(r#"{"bos_token": 5}"#)).is_err());
        assert!(parse(Some("{")).is_err());
    }
}
