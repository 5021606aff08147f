//! `glmtune worker`: trains a server's queued runs on this machine's devices. It registers (its
//! devices, and the base models on its disk by name and content hash), then each device leases a
//! run, trains it as the server's own supervisor would (`glmtune train --job`, then `glmtune
//! eval`), heartbeats, reports the trainer's log, uploads each checkpoint as it is written and
//! the adapter at the end, and completes the run. A worker that dies loses its leases; the server
//! requeues their runs, which resume elsewhere from their last uploaded checkpoint.

pub mod client;
mod lease;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glmtune_shared::worker::{WorkerDevice, WorkerModel, WorkerRegistration};

use client::{Client, ClientError};

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The server's address (`http://gpu-server:8080`).
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// A worker key (`glmtune token create --role worker`, or an admin's in the dashboard).
    #[arg(
        long,
        value_name = "KEY",
        env = "GLMTUNE_WORKER_TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// The GPUs to train on, one run each (`0,1`); without it, one run at a time on the CPU.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub gpus: Vec<usize>,
    /// A base model on this machine, by the name the server's runs use: `NAME=DIR`, repeated.
    #[arg(long = "model", value_name = "NAME=DIR", required = true)]
    pub models: Vec<String>,
    /// Where datasets (by hash) and the runs being trained are kept.
    #[arg(long, value_name = "DIR", default_value = "glmtune-worker")]
    pub work_dir: PathBuf,
    /// The name the server lists this worker under (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds between lease requests while the queue is empty.
    #[arg(long, default_value_t = 2.0)]
    pub poll_seconds: f64,
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("--model {0:?}: expected NAME=DIR")]
    ModelArg(String),
    #[error("--model {name}: {path} is not a folder")]
    ModelDir { name: String, path: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkerError {
    let what = what.into();
    move |source| WorkerError::Io { what, source }
}

/// What every device's loop shares.
pub(crate) struct Shared {
    pub client: Client,
    pub worker_id: String,
    pub name: String,
    pub models: BTreeMap<String, PathBuf>,
    pub work_dir: PathBuf,
    pub stopping: AtomicBool,
}

pub fn run(args: WorkerArgs) -> Result<(), WorkerError> {
    let mut models = BTreeMap::new();
    let mut listed = Vec::new();
    for arg in &args.models {
        let (name, dir) = arg
            .split_once('=')
            .filter(|(name, dir)| !name.is_empty() && !dir.is_empty())
            .ok_or_else(|| WorkerError::ModelArg(arg.clone()))?;
        let dir = std::path::absolute(dir).map_err(io(format!("--model {arg}")))?;
        if !dir.is_dir() {
            return Err(WorkerError::ModelDir {
                name: name.to_owned(),
                path: dir.display().to_string(),
            });
        }
        listed.push(WorkerModel {
            name: name.to_owned(),
            sha256: folder_hash(&dir)?,
        });
        models.insert(name.to_owned(), dir);
    }
    let devices: Vec<String> = if args.gpus.is_empty() {
        vec!["cpu".to_owned()]
    } else {
        args.gpus.iter().map(|gpu| format!("cuda:{gpu}")).collect()
    };
    let name = args
        .name
        .clone()
        .or_else(crate::serve::supervisor::identity::host_name)
        .unwrap_or_else(|| "worker".to_owned());
    let client = Client::new(&args.server, &args.token);
    let worker = client.register(&WorkerRegistration {
        name: name.clone(),
        devices: devices
            .iter()
            .map(|device| WorkerDevice {
                device: device.clone(),
                memory_bytes: None,
            })
            .collect(),
        models: listed,
    })?;
    eprintln!(
        "glmtune: worker {} ({}) registered with {}: {} device(s), models {}",
        worker.name,
        worker.id,
        args.server,
        devices.len(),
        models.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let work_dir = std::path::absolute(&args.work_dir).unwrap_or(args.work_dir.clone());
    std::fs::create_dir_all(&work_dir).map_err(io(format!("creating {}", work_dir.display())))?;
    let shared = Arc::new(Shared {
        client,
        worker_id: worker.id,
        name: worker.name,
        models,
        work_dir,
        stopping: AtomicBool::new(false),
    });
    {
        let shared = shared.clone();
        // Ctrl-C or SIGTERM: take no new run; the ones training now go on to their end.
        let _ = ctrlc::set_handler(move || shared.stopping.store(true, Ordering::SeqCst));
    }
    let poll = Duration::from_secs_f64(args.poll_seconds.clamp(0.05, 3600.0));
    let threads: Vec<_> = devices
        .into_iter()
        .map(|device| {
            let shared = shared.clone();
            std::thread::spawn(move || device_loop(&shared, &device, poll))
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// One device: lease, train, report; again until stopped.
fn device_loop(shared: &Shared, device: &str, poll: Duration) {
    while !shared.stopping.load(Ordering::SeqCst) {
        match shared.client.lease(&shared.worker_id, device) {
            Ok(Some(lease)) => {
                let run = lease.run.id.clone();
                eprintln!("glmtune: {device}: leased run {run}");
                match lease::train(shared, device, lease) {
                    Ok(outcome) => eprintln!("glmtune: {device}: run {run}: {outcome}"),
                    Err(error) => eprintln!("glmtune: {device}: run {run}: {error}"),
                }
            }
            Ok(None) => std::thread::sleep(poll),
            Err(error) => {
                eprintln!("glmtune: {device}: leasing: {error}");
                std::thread::sleep(poll);
            }
        }
    }
}

/// SHA-256 over a model folder's files: each name, its length and its bytes, in name order.
fn folder_hash(dir: &Path) -> Result<String, WorkerError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    names.sort();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for path in names {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut file =
            std::fs::File::open(&path).map_err(io(format!("reading {}", path.display())))?;
        let length = file.metadata().map_or(0, |m| m.len());
        hasher.update(name.unwrap_or_default().as_bytes());
        hasher.update([0]);
        hasher.update(length.to_le_bytes());
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(io(format!("reading {}", path.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}
