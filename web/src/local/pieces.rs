//! A large file read by byte ranges through the browser's Cache API: fetched in fixed pieces, each
//! kept as its own cache entry, so a reload reads them from disk, an interrupted download resumes
//! at the first missing piece, and no more than one piece is held in memory at a time.
//!
//! Piece keys carry the file's size and modification time: a file replaced on the server gets new
//! keys, and the old version's pieces are dropped once the new one has been read through.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::api::{self, Failure};

/// Pieces are a sixteenth of the file, between 64 KiB and 8 MiB.
fn piece_size(total: u64) -> u64 {
    const UNIT: u64 = 64 << 10;
    (total / 16).clamp(UNIT, 8 << 20).div_ceil(UNIT) * UNIT
}

const CACHE: &str = "glmtune-models";

/// The cache key of `url` as a file of `bytes` last modified at `modified`: a replaced file gets
/// new keys.
pub fn versioned_key(url: &str, bytes: u64, modified: u64) -> String {
    format!("{url}?version={bytes}-{modified}")
}

/// The browser's cache of model files, when it has one.
pub async fn open_cache() -> Option<web_sys::Cache> {
    let caches = api::caches()?;
    JsFuture::from(caches.open(CACHE))
        .await
        .ok()?
        .dyn_into()
        .ok()
}

/// An entry's bytes, when the cache holds it.
async fn cached(cache: &web_sys::Cache, key: &str) -> Option<Vec<u8>> {
    let found = JsFuture::from(cache.match_with_str(key)).await.ok()?;
    let response = found.dyn_into::<web_sys::Response>().ok()?;
    let buffer = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
    Some(js_sys::Uint8Array::new(&buffer).to_vec())
}

async fn store(cache: &web_sys::Cache, key: &str, bytes: &[u8]) {
    let mut copy = bytes.to_vec();
    if let Ok(response) = web_sys::Response::new_with_opt_u8_array(Some(&mut copy)) {
        // A full cache only costs the next visit a download.
        let _ = JsFuture::from(cache.put_with_str(key, &response)).await;
    }
}

/// A small file read whole: from the cache under `key`, or fetched and cached.
pub async fn whole_file(
    cache: Option<&web_sys::Cache>,
    url: &str,
    key: &str,
) -> Result<Vec<u8>, Failure> {
    if let Some(cache) = cache {
        if let Some(bytes) = cached(cache, key).await {
            return Ok(bytes);
        }
    }
    let bytes = api::get_bytes(url).await?;
    if let Some(cache) = cache {
        store(cache, key, &bytes).await;
    }
    Ok(bytes)
}

pub struct PiecedFile {
    cache: Option<web_sys::Cache>,
    url: String,
    /// The file's versioned key; pieces add `&piece=N` to it.
    versioned: String,
    pub total: u64,
    piece: u64,
    /// The piece read last, by index.
    current: Option<(u64, Vec<u8>)>,
    /// Indexes of the pieces seen, so progress counts each once.
    seen: std::collections::BTreeSet<u64>,
    pub downloaded: usize,
    pub from_cache: usize,
    on_progress: Box<dyn Fn(f64, f64)>,
}

impl PiecedFile {
    /// `url` of `total` bytes, last modified at `modified` (seconds; part of the cache keys).
    pub fn new(
        cache: Option<web_sys::Cache>,
        url: &str,
        total: u64,
        modified: u64,
        on_progress: impl Fn(f64, f64) + 'static,
    ) -> Self {
        Self {
            cache,
            url: url.to_owned(),
            versioned: versioned_key(url, total, modified),
            total,
            piece: piece_size(total),
            current: None,
            seen: Default::default(),
            downloaded: 0,
            from_cache: 0,
            on_progress: Box::new(on_progress),
        }
    }

    pub fn pieces(&self) -> u64 {
        self.total.div_ceil(self.piece)
    }

    fn key(&self, index: u64) -> String {
        format!("{}&piece={index}", self.versioned)
    }

    async fn load_piece(&mut self, index: u64) -> Result<(), Failure> {
        if self.current.as_ref().is_some_and(|(i, _)| *i == index) {
            return Ok(());
        }
        let key = self.key(index);
        let mut bytes = match &self.cache {
            Some(cache) => cached(cache, &key).await,
            None => None,
        };
        let first_time = self.seen.insert(index);
        if bytes.is_some() {
            self.from_cache += usize::from(first_time);
        } else {
            let start = index * self.piece;
            let end = (start + self.piece).min(self.total);
            let fetched = api::get_range(&self.url, start, end).await?;
            if let Some(cache) = &self.cache {
                store(cache, &key, &fetched).await;
            }
            self.downloaded += usize::from(first_time);
            bytes = Some(fetched);
        }
        let done = (self.seen.len() as u64 * self.piece).min(self.total);
        (self.on_progress)(done as f64, self.total as f64);
        self.current = bytes.map(|b| (index, b));
        Ok(())
    }

    /// Bytes `start..start + len`.
    pub async fn read(&mut self, start: u64, len: u64) -> Result<Vec<u8>, Failure> {
        let end = start + len;
        if end > self.total {
            return Err(Failure::local(format!(
                "{}: bytes {start}..{end} lie past its end ({} bytes)",
                self.url, self.total
            )));
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut at = start;
        while at < end {
            let index = at / self.piece;
            self.load_piece(index).await?;
            let piece_start = index * self.piece;
            let Some((_, bytes)) = &self.current else {
                return Err(Failure::local("a piece vanished while being read"));
            };
            let from = (at - piece_start) as usize;
            let to = ((end - piece_start) as usize).min(bytes.len());
            out.extend_from_slice(&bytes[from..to]);
            at = piece_start + to as u64;
        }
        Ok(out)
    }

    /// Every piece fetched into the cache (a resumed download fetches only the missing ones).
    pub async fn fetch_all(&mut self) -> Result<(), Failure> {
        for index in 0..self.pieces() {
            self.load_piece(index).await?;
        }
        Ok(())
    }

    /// Drops other versions' pieces of this file from the cache.
    pub async fn forget_other_versions(&self) {
        let Some(cache) = &self.cache else { return };
        let Ok(keys) = JsFuture::from(cache.keys()).await else {
            return;
        };
        let ours = format!("{}&", self.versioned);
        for request in js_sys::Array::from(&keys).iter() {
            let Ok(request) = request.dyn_into::<web_sys::Request>() else {
                continue;
            };
            let url = request.url();
            let same_file = url
                .split_once("?version=")
                .is_some_and(|(path, _)| path.ends_with(&self.url));
            if same_file && !url.contains(&ours) {
                let _ = JsFuture::from(cache.delete_with_request(&request)).await;
            }
        }
    }
}
