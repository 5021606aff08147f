//! Word segmentation for ROUGE: jieba's default mode with HMM, as `jieba.cut(text)` in Python.
//!
//! The segmenter is built once and shared: loading jieba's dictionary (about 350,000 words)
//! takes a noticeable fraction of a second, far more than scoring a line.
//!
//! Native builds use the dictionary compiled into `jieba-rs`. A wasm32 build has none (its
//! compression needs C code there), so a browser must call [`install_dictionary`] with jieba's
//! `dict.txt` before scoring; without it, words come from the HMM alone and differ from the
//! official segmentation.

use std::io::BufRead;
use std::sync::OnceLock;

use jieba_rs::Jieba;

use super::MetricsError;

static SEGMENTER: OnceLock<Jieba> = OnceLock::new();

/// Uses `dictionary` (jieba's `dict.txt` format: `word freq [tag]` a line) instead of the
/// built-in one. It must come before the first segmentation: the segmenter is fixed once built.
pub fn install_dictionary<R: BufRead>(dictionary: &mut R) -> Result<(), MetricsError> {
    let jieba = Jieba::with_dict(dictionary).map_err(|e| MetricsError::Dictionary(e.to_string()))?;
    SEGMENTER.set(jieba).map_err(|_| MetricsError::DictionaryAlreadySet)
}

fn segmenter() -> &'static Jieba {
    SEGMENTER.get_or_init(default_segmenter)
}

#[cfg(not(target_arch = "wasm32"))]
fn default_segmenter() -> Jieba {
    Jieba::new()
}

#[cfg(target_arch = "wasm32")]
fn default_segmenter() -> Jieba {
    Jieba::empty()
}

/// The words of `text`, as `list(jieba.cut(text))` gives them (default mode, HMM on).
pub fn cut(text: &str) -> Vec<&str> {
    segmenter().cut(text, true).into_iter().map(|token| token.word).collect()
}
