//! The passages a teacher asks questions about (`--task questions`): the paragraphs of text and
//! Markdown documents, joined up to a passage's length.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The longest passage of a document, in characters: paragraphs are joined up to it.
const PASSAGE_CHARS: usize = 600;

/// The passages of a text or Markdown document: its paragraphs (blank-line separated), joined
/// while they stay under [`PASSAGE_CHARS`].
fn passages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        match out.last_mut() {
            Some(last) if last.chars().count() + paragraph.chars().count() < PASSAGE_CHARS => {
                last.push_str("\n\n");
                last.push_str(paragraph);
            }
            _ => out.push(paragraph.to_owned()),
        }
    }
    out
}

/// The documents' passages, each with its document's name: FILE itself, or the `.txt` and `.md`
/// files of the folder FILE, in name order.
pub fn document_passages(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "txt" || e == "md"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        // A folder's documents by their names: where the folder is (a server's data) is no
        // part of a record.
        let name = match (path.is_dir(), file.file_name()) {
            (true, Some(name)) => name.to_string_lossy().into_owned(),
            _ => file.display().to_string(),
        };
        out.extend(passages(&text).into_iter().map(|p| (name.clone(), p)));
    }
    if out.is_empty() {
        bail!("{}: no text to ask questions about", path.display());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_join_paragraphs_up_to_their_length() {
        let long = "字".repeat(PASSAGE_CHARS);
        assert_eq!(
            passages("一\n\n二\n\n\n三"),
            vec!["一\n\n二\n\n三".to_owned()]
        );
        assert_eq!(passages(&format!("一\n\n{long}\n\n二")).len(), 3);
    }
}
