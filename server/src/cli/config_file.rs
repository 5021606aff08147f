//! `glmtune train --config FILE` (and `serve`): flags from a TOML or JSON file.
//!
//! Keys are the flag names (`learning_rate` or `learning-rate`); `true` switches a flag on, `false`
//! leaves it off; a list repeats the flag. The file's values come first on the command line, so a flag typed after them wins.

use std::path::Path;

use anyhow::{bail, Context};

/// Expands `--config FILE` (anywhere after the subcommand) into the flags the file holds.
pub fn expand(args: Vec<String>) -> anyhow::Result<Vec<String>> {
    // `glmtune bench train --config chatglm-6b` names a model shape, and `glmtune sweep
    // --config sweep.toml` a sweep, not a flags file (global flags such as `--threads N` may
    // come before the subcommand).
    let is_config = |a: &String| a == "--config" || a.starts_with("--config=");
    if args
        .iter()
        .skip(1)
        .take_while(|a| !is_config(a))
        .any(|a| a == "bench" || a == "sweep")
    {
        return Ok(args);
    }
    let Some(position) = args
        .iter()
        .position(|a| a == "--config" || a.starts_with("--config="))
    else {
        return Ok(args);
    };
    let (path, consumed) = match args[position].strip_prefix("--config=") {
        Some(path) => (path.to_owned(), 1),
        None => match args.get(position + 1) {
            Some(path) => (path.clone(), 2),
            None => bail!("--config needs a file"),
        },
    };
    let flags = flags_from_file(Path::new(&path))?;
    let mut expanded: Vec<String> = args[..position].to_vec();
    expanded.extend(flags);
    expanded.extend_from_slice(&args[position + consumed..]);
    Ok(expanded)
}

fn flags_from_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: serde_json::Map<String, serde_json::Value> =
        if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", path.display()))?
        } else {
            let value: toml::Value = toml::from_str(&text)
                .with_context(|| format!("{}: invalid TOML", path.display()))?;
            match serde_json::to_value(value)? {
                serde_json::Value::Object(map) => map,
                _ => bail!("{}: expected a table of flags", path.display()),
            }
        };
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            serde_json::Value::Bool(true) => flags.push(flag),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::String(s) => flags.extend([flag, s]),
            serde_json::Value::Number(n) => flags.extend([flag, n.to_string()]),
            // A repeatable flag, such as `model = ["a=DIR", "b=DIR"]` for `serve`.
            serde_json::Value::Array(items) => {
                for item in items {
                    match item {
                        serde_json::Value::String(s) => flags.extend([flag.clone(), s]),
                        serde_json::Value::Number(n) => flags.extend([flag.clone(), n.to_string()]),
                        other => bail!(
                            "{}: `{key}`: list items must be strings or numbers, found {other}",
                            path.display()
                        ),
                    }
                }
            }
            other => bail!(
                "{}: `{key}`: expected a string, number, boolean or list, found {other}",
                path.display()
            ),
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_flags_come_before_typed_flags() {
        let dir = std::env::temp_dir().join(format!("glmtune-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.toml");
        std::fs::write(&path, "learning_rate = 0.01\nno_shuffle = true\nprefix_projection = false\noutput_dir = \"out\"\n").unwrap();
        let args: Vec<String> = [
            "glmtune",
            "train",
            "--config",
            path.to_str().unwrap(),
            "--max-steps",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let expanded = expand(args).unwrap();
        assert_eq!(
            expanded[2..],
            [
                "--learning-rate",
                "0.01",
                "--no-shuffle",
                "--output-dir",
                "out",
                "--max-steps",
                "3"
            ]
        );
        std::fs::write(&path, "model = [\"a=x\", \"b=y\"]\n").unwrap();
        let expanded =
            expand(vec!["--config".into(), path.to_string_lossy().into_owned()]).unwrap();
        assert_eq!(expanded, ["--model", "a=x", "--model", "b=y"]);
        std::fs::write(&path, "bad = [[1], 2]\n").unwrap();
        let error =
            expand(vec!["--config".into(), path.to_string_lossy().into_owned()]).unwrap_err();
        assert!(error.to_string().contains("`bad`"));
    }
}
