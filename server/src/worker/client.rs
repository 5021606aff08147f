//! The worker's side of the lease protocol (`glmtune_shared::worker`): one call a method, each
//! retried on a dropped connection or a 5xx with backoff, each answer read into its typed
//! contract. A `410 Gone` is [`ClientError::Lost`]: the lease is over and the run must stop here.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use glmtune_shared::worker::{
    Commit, Completion, FileDigest, Heartbeat, Lease, LeaseRequest, LogBatch, UploadState, Worker,
    WorkerRegistration,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How much of a file one upload call carries.
pub const CHUNK: usize = 4 << 20;
const TRIES: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the lease is no longer held: {0}")]
    Lost(String),
    #[error("{what}: the server answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {message}")]
    Transport { what: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: the file has SHA-256 {found}, not {expected}")]
    Hash {
        what: String,
        found: String,
        expected: String,
    },
}

pub type ClientResult<T> = Result<T, ClientError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
    let what = what.into();
    move |source| ClientError::Io { what, source }
}

/// A server's API, as a worker key calls it.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// What one call sends.
enum Body<'a> {
    Empty,
    Json(Vec<u8>),
    Bytes(&'a [u8]),
}

impl Client {
    pub fn new(base: &str, token: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .new_agent();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// One call, retried on connection failures and 5xx; the response of any other status.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
    ) -> ClientResult<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {path}");
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=TRIES {
            let builder = ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("Authorization", format!("Bearer {}", self.token));
            let result = match &body {
                Body::Empty => builder
                    .body(())
                    .map_err(|e| e.to_string())
                    .and_then(|r| self.agent.run(r).map_err(|e| e.to_string())),
                Body::Json(bytes) => builder
                    .header("Content-Type", "application/json")
                    .body(bytes.as_slice())
                    .map_err(|e| e.to_string())
                    .and_then(|r| self.agent.run(r).map_err(|e| e.to_string())),
                Body::Bytes(bytes) => builder
                    .header("Content-Type", "application/octet-stream")
                    .body(*bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|r| self.agent.run(r).map_err(|e| e.to_string())),
            };
            match result {
                Ok(response) if response.status().is_server_error() && attempt < TRIES => {}
                Ok(response) => return Ok(response),
                Err(message) if attempt == TRIES => {
                    return Err(ClientError::Transport { what, message })
                }
                Err(_) => {}
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(10));
        }
        Err(ClientError::Transport {
            what,
            message: "no answer".into(),
        })
    }

    /// The body of a 2xx answer as `T`; a 410 as [`ClientError::Lost`]; anything else an error.
    fn expect<T: DeserializeOwned>(
        what: &str,
        response: ureq::http::Response<ureq::Body>,
    ) -> ClientResult<T> {
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .read_to_string()
            .map_err(|e| ClientError::Transport {
                what: what.to_owned(),
                message: e.to_string(),
            })?;
        match status {
            200..=299 => serde_json::from_str(if text.is_empty() { "null" } else { &text })
                .map_err(|e| ClientError::Transport {
                    what: what.to_owned(),
                    message: format!("unexpected answer ({e}): {text}"),
                }),
            410 => Err(ClientError::Lost(text)),
            _ => Err(ClientError::Status {
                what: what.to_owned(),
                status,
                body: text,
            }),
        }
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> ClientResult<T> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Transport {
            what: path.to_owned(),
            message: e.to_string(),
        })?;
        let response = self.call("POST", path, Body::Json(bytes))?;
        Self::expect(path, response)
    }

    pub fn register(&self, registration: &WorkerRegistration) -> ClientResult<Worker> {
        self.post("/api/v1/workers", registration)
    }

    /// A lease on a queued run for `device`; `None` when no run waits.
    pub fn lease(&self, worker: &str, device: &str) -> ClientResult<Option<Lease>> {
        let path = format!("/api/v1/workers/{worker}/lease");
        let request = LeaseRequest {
            device: device.to_owned(),
        };
        let response = self.call(
            "POST",
            &path,
            Body::Json(serde_json::to_vec(&request).unwrap_or_default()),
        )?;
        if response.status().as_u16() == 204 {
            return Ok(None);
        }
        Self::expect(&path, response).map(Some)
    }

    pub fn heartbeat(&self, lease: &str) -> ClientResult<Heartbeat> {
        let path = format!("/api/v1/leases/{lease}/heartbeat");
        let response = self.call("POST", &path, Body::Empty)?;
        Self::expect(&path, response)
    }

    pub fn log(&self, lease: &str, batch: &LogBatch) -> ClientResult<()> {
        self.post::<_, Option<()>>(&format!("/api/v1/leases/{lease}/log"), batch)
            .map(|_| ())
    }

    pub fn commit(&self, lease: &str, files: Vec<FileDigest>) -> ClientResult<()> {
        self.post::<_, Option<()>>(&format!("/api/v1/leases/{lease}/commit"), &Commit { files })
            .map(|_| ())
    }

    pub fn complete(
        &self,
        lease: &str,
        completion: &Completion,
    ) -> ClientResult<glmtune_shared::api::Run> {
        self.post(&format!("/api/v1/leases/{lease}/complete"), completion)
    }

    /// Downloads `path` (relative to the API) to `to`, through a temporary file, and checks its
    /// hash.
    pub fn download(&self, path: &str, to: &Path, sha256: &str) -> ClientResult<()> {
        let response = self.call("GET", path, Body::Empty)?;
        let status = response.status().as_u16();
        if status == 410 {
            return Err(ClientError::Lost(path.to_owned()));
        }
        if status != 200 {
            return Err(ClientError::Status {
                what: format!("GET {path}"),
                status,
                body: response.into_body().read_to_string().unwrap_or_default(),
            });
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        let partial = to.with_extension("partial");
        let mut file = std::fs::File::create(&partial)
            .map_err(io(format!("creating {}", partial.display())))?;
        let mut reader = response.into_body().into_reader();
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(io(format!("reading GET {path}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            file.write_all(&buffer[..n])
                .map_err(io(format!("writing {}", partial.display())))?;
        }
        let found = hex::encode(hasher.finalize());
        if found != sha256 {
            let _ = std::fs::remove_file(&partial);
            return Err(ClientError::Hash {
                what: format!("GET {path}"),
                found,
                expected: sha256.to_owned(),
            });
        }
        file.sync_all()
            .map_err(io(format!("writing {}", partial.display())))?;
        std::fs::rename(&partial, to).map_err(io(format!("writing {}", to.display())))
    }

    /// Uploads the file at `from` as `path` of the run, going on from what the server already
    /// holds (after a cut, or a call whose answer was lost). Returns its digest.
    pub fn upload(&self, lease: &str, path: &str, from: &Path) -> ClientResult<FileDigest> {
        let digest = file_digest(from, path)?;
        let query = format!("path={}", encode(path));
        let state_path = format!("/api/v1/leases/{lease}/uploads?{query}");
        let state: UploadState =
            Self::expect(&state_path, self.call("GET", &state_path, Body::Empty)?)?;
        let mut offset = state.bytes;
        if offset > digest.bytes {
            // More than the file: an older copy under the same lease. Commit drops a bad copy.
            offset = 0;
        }
        let mut file =
            std::fs::File::open(from).map_err(io(format!("reading {}", from.display())))?;
        let mut buffer = vec![0u8; CHUNK];
        while offset < digest.bytes {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(offset))
                .map_err(io(format!("reading {}", from.display())))?;
            let n = file
                .read(&mut buffer)
                .map_err(io(format!("reading {}", from.display())))?;
            if n == 0 {
                break;
            }
            let chunk_path = format!("/api/v1/leases/{lease}/uploads?{query}&offset={offset}");
            let response = self.call("POST", &chunk_path, Body::Bytes(&buffer[..n]))?;
            if response.status().as_u16() == 409 {
                // The server holds another amount (an answer lost after it wrote): go on from it.
                let state: UploadState =
                    Self::expect(&state_path, self.call("GET", &state_path, Body::Empty)?)?;
                offset = state.bytes.min(digest.bytes);
                continue;
            }
            let state: UploadState = Self::expect(&chunk_path, response)?;
            offset = state.bytes;
        }
        Ok(digest)
    }
}

/// The digest of the file at `from`, named `path`.
pub fn file_digest(from: &Path, path: &str) -> ClientResult<FileDigest> {
    crate::run_folder::file_digest(from, path).map_err(io(format!("reading {}", from.display())))
}

/// `path` as a query value: the characters a run's file names use pass, the rest escaped.
pub fn encode(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
