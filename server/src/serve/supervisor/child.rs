//! A run's child processes: the `glmtune train` flags of its settings, starting a child bound to
//! the server's life, and following the files it writes.

use crate::device::DeviceSpec;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use glmtune_shared::api::{ReadOptions, RunSettings};

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

/// `--NAME=VALUE`: one argument, so that a value starting with `-` (a source prefix of
/// `-x --help`, a column named `--resume`) is never read as a flag of its own.
pub fn flag(name: &str, value: &str) -> String {
    format!("--{name}={value}")
}

/// Where a child runs: the GPU its run holds, else the CPU.
pub fn device_of(gpu: Option<usize>) -> DeviceSpec {
    gpu.map_or(DeviceSpec::Cpu, DeviceSpec::Cuda)
}

/// The `glmtune eval` flags that read a dataset as its options say.
pub fn read_flags(options: &ReadOptions) -> Vec<String> {
    let mut flags = vec![flag("format", options.format.as_str())];
    for (name, value) in [
        ("prompt-column", &options.prompt_column),
        ("response-column", &options.response_column),
        ("history-column", &options.history_column),
    ] {
        if let Some(value) = value {
            flags.push(flag(name, value));
        }
    }
    flags
}

/// What `glmtune eval` reads and writes for a run.
pub struct EvalFiles<'a> {
    pub model: &'a Path,
    /// The run's folder, with its final adapter.
    pub adapter: &'a Path,
    pub validation: &'a Path,
    pub options: &'a ReadOptions,
    pub output: &'a Path,
    pub settings: &'a RunSettings,
    pub device: DeviceSpec,
}

/// The `glmtune eval` arguments of a run's evaluation: greedy answers to `eval_samples`
/// validation records, with the run's lengths and source prefix.
pub fn eval_args(files: &EvalFiles<'_>) -> Vec<String> {
    let settings = files.settings;
    let mut args: Vec<String> = vec![
        "eval".into(),
        flag("model", &files.model.to_string_lossy()),
        flag("adapter", &files.adapter.to_string_lossy()),
        flag("validation-file", &files.validation.to_string_lossy()),
        flag("output-dir", &files.output.to_string_lossy()),
        "--greedy".into(),
        flag(
            "max-predict-samples",
            &settings.eval_samples.unwrap_or(0).to_string(),
        ),
    ];
    args.extend(read_flags(files.options));
    args.push(flag("device", &files.device.to_string()));
    for (name, value) in [
        ("max-source-length", settings.max_source_length),
        ("max-target-length", settings.max_target_length),
    ] {
        if let Some(value) = value {
            args.push(flag(name, &value.to_string()));
        }
    }
    if let Some(prefix) = &settings.source_prefix {
        args.push(flag("source-prefix", prefix));
    }
    args
}

/// Starts `glmtune ARGS` with stderr appended to `stderr_path` (and stdout to `stdout_path`),
/// bound to die with this thread's process.
pub fn spawn_child(
    args: &[String],
    stderr_path: &Path,
    stdout_path: Option<&Path>,
) -> std::io::Result<Child> {
    spawn_child_with(args, stderr_path, stdout_path, &[])
}

/// [`spawn_child`] with `env` set for the child alone (a secret it needs, never on its command
/// line).
pub fn spawn_child_with(
    args: &[String],
    stderr_path: &Path,
    stdout_path: Option<&Path>,
    env: &[(&str, &str)],
) -> std::io::Result<Child> {
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
        .stderr(Stdio::from(stderr))
        .envs(env.iter().copied());
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
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use glmtune_shared::api::RecordFormat;

    #[test]
    fn a_child_runs_on_its_gpu_or_the_cpu() {
        assert_eq!(device_of(Some(2)).to_string(), "cuda:2");
        assert_eq!(device_of(None).to_string(), "cpu");
    }

    #[test]
    fn read_options_become_eval_flags_with_text_kept_whole() {
        let options = ReadOptions {
            format: RecordFormat::Columns,
            prompt_column: Some("-x --help".into()),
            response_column: Some("答案".into()),
            history_column: None,
        };
        assert_eq!(
            read_flags(&options),
            [
                "--format=columns",
                "--prompt-column=-x --help",
                "--response-column=答案"
            ]
        );
    }
}
