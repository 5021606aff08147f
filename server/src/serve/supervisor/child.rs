//! A run's child processes: the `glmtune train` flags of its settings, starting a child bound to
//! the server's life, and following the files it writes.

use crate::device::DeviceSpec;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use glmtune_shared::api::{Precision, RunSettings};

/// A file read as it grows, line by line.
pub struct Tail {
    path: PathBuf,
    pub offset: u64,
}

impl Tail {
    pub fn new(path: PathBuf) -> Self {
        Tail { path, offset: 0 }
    }

    /// Complete lines written since the last call. A file that shrank (a resumed run rewrote
    /// its log) is read again from the start.
    pub fn lines(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let length = file.metadata().map_or(0, |m| m.len());
        if length < self.offset {
            self.offset = 0;
        }
        let mut text = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut text).is_err()
        {
            return Vec::new();
        }
        let Some(end) = text.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        self.offset += end as u64 + 1;
        String::from_utf8_lossy(&text[..end])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Lines of the trainer's stderr that are progress, not trouble.
pub fn is_routine(text: &str) -> bool {
    [
        "resuming",
        "no checkpoint",
        "adapter written",
        "interrupted",
        "generated",
        "skipped",
    ]
    .iter()
    .any(|p| text.starts_with(p))
}

/// `--NAME=VALUE`: one argument, so that a value starting with `-` (a source prefix of
/// `-x --help`, a column named `--resume`) is never read as a flag of its own.
pub fn flag(name: &str, value: &str) -> String {
    format!("--{name}={value}")
}

/// Where a child runs: the GPU its run holds, else the CPU.
pub fn device_flag(gpu: Option<usize>) -> String {
    let device = gpu.map_or(DeviceSpec::Cpu, DeviceSpec::Cuda);
    flag("device", &device.to_string())
}

/// The `glmtune train` flags of a run's settings.
pub fn training_flags(settings: &RunSettings) -> Vec<String> {
    let s = settings;
    let text = |v: Option<u64>| v.map(|v| v.to_string());
    let real = |v: Option<f64>| v.map(|v| v.to_string());
    let epochs = if s.max_steps.is_none() {
        real(s.num_train_epochs)
    } else {
        None
    };
    let valued = [
        ("pre-seq-len", text(s.pre_seq_len)),
        ("learning-rate", real(s.learning_rate)),
        ("max-steps", text(s.max_steps)),
        ("num-train-epochs", epochs),
        (
            "per-device-train-batch-size",
            text(s.per_device_train_batch_size),
        ),
        (
            "gradient-accumulation-steps",
            text(s.gradient_accumulation_steps),
        ),
        ("max-source-length", text(s.max_source_length)),
        ("max-target-length", text(s.max_target_length)),
        ("warmup-steps", text(s.warmup_steps)),
        ("weight-decay", real(s.weight_decay)),
        ("max-grad-norm", real(s.max_grad_norm)),
        ("prefix-dropout", real(s.prefix_dropout)),
        ("seed", text(s.seed)),
        ("logging-steps", text(s.logging_steps)),
        ("save-steps", text(s.save_steps)),
        ("eval-steps", text(s.eval_steps)),
        ("source-prefix", s.source_prefix.clone()),
        ("forward-batch-size", text(s.forward_batch_size)),
        ("optim", s.optim.map(|o| o.as_str().to_owned())),
    ];
    let mut flags: Vec<String> = valued
        .into_iter()
        .filter_map(|(name, value)| Some(flag(name, &value?)))
        .collect();
    if s.prefix_projection == Some(true) {
        flags.push("--prefix-projection".into());
    }
    if s.shuffle == Some(false) {
        flags.push("--no-shuffle".into());
    }
    if s.gradient_checkpointing == Some(true) {
        flags.push("--gradient-checkpointing".into());
    }
    match s.precision {
        Some(Precision::Bf16) => flags.push("--bf16".into()),
        Some(Precision::Fp16) => flags.push("--fp16".into()),
        Some(Precision::F32) | None => {}
    }
    if let Some(bits) = s.quantization_bit {
        flags.push(flag("quantization-bit", &u8::from(bits).to_string()));
    }
    flags
}

/// Starts `glmtune ARGS` with stderr appended to `stderr_path` (and stdout to `stdout_path`),
/// bound to die with this thread's process.
pub fn spawn_child(
    args: &[String],
    stderr_path: &Path,
    stdout_path: Option<&Path>,
) -> anyhow::Result<Child> {
    // The binary this server runs, even after its file was replaced or removed (an upgrade in
    // place): on Linux /proc/self/exe still names it, where the path would name the new file or
    // nothing.
    let proc_exe = Path::new("/proc/self/exe");
    let exe = if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe()?
    };
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_path)?;
    let stdout = match stdout_path {
        Some(path) => Stdio::from(std::fs::File::create(path)?),
        None => Stdio::null(),
    };
    let mut command = Command::new(exe);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(stderr));
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    Ok(command.spawn()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_train_flags_with_text_kept_whole() {
        let settings = RunSettings {
            max_steps: Some(6),
            source_prefix: Some("你是医生。 Answer briefly".into()),
            shuffle: Some(false),
            ..RunSettings::default()
        };
        assert_eq!(
            training_flags(&settings),
            [
                "--max-steps=6",
                "--source-prefix=你是医生。 Answer briefly",
                "--no-shuffle"
            ]
        );
    }

    #[test]
    fn a_child_runs_on_its_gpu_or_the_cpu() {
        assert_eq!(device_flag(Some(2)), "--device=cuda:2");
        assert_eq!(device_flag(None), "--device=cpu");
    }

    #[test]
    fn a_value_starting_with_a_dash_stays_one_argument() {
        let settings = RunSettings {
            source_prefix: Some("-x --help".into()),
            ..RunSettings::default()
        };
        assert_eq!(training_flags(&settings), ["--source-prefix=-x --help"]);
    }

    #[test]
    fn memory_and_precision_settings_reach_the_trainer() {
        let settings: RunSettings = serde_json::from_str(
            r#"{"forward_batch_size": 16, "gradient_checkpointing": true, "precision": "bf16",
                "optim": "adamw_torch"}"#,
        )
        .unwrap();
        assert_eq!(
            training_flags(&settings),
            [
                "--forward-batch-size=16",
                "--optim=adamw_torch",
                "--gradient-checkpointing",
                "--bf16"
            ]
        );
        let fp16 = RunSettings {
            precision: Some(Precision::Fp16),
            ..RunSettings::default()
        };
        assert_eq!(training_flags(&fp16), ["--fp16"]);
        let int4: RunSettings = serde_json::from_str(r#"{"quantization_bit": 4}"#).unwrap();
        assert_eq!(training_flags(&int4), ["--quantization-bit=4"]);
        let error = serde_json::from_str::<RunSettings>(r#"{"quantization_bit": 2}"#).unwrap_err();
        assert!(error.to_string().contains("4 or 8"), "{error}");
        assert!(serde_json::from_str::<RunSettings>(r#"{"precision": "fp8"}"#).is_err());
    }
}
