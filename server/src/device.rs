//! The `--device cpu|cuda|cuda:N` flag, shared by every subcommand that runs the model (and by
//! `glmtune serve`), and the opening of the device it names.
//!
//! A CUDA device needs a binary built with the `cuda` feature (scripts/build-cuda.sh). That build
//! loads the CUDA libraries with `dlopen` when a CUDA device is first asked for; cudarc panics when
//! one is missing, so each is probed here first and a missing one is named in an ordinary error.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use clap::Args;

/// Which device a `--device` value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// A CUDA GPU by its ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => value
                .strip_prefix("cuda:")
                .and_then(|ordinal| ordinal.parse::<usize>().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| "expected cpu, cuda or cuda:N (N a GPU ordinal)".to_owned()),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// The GPUs `glmtune serve --gpus` may use: `all` (every visible one) or ordinals (`0,1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    All,
    Ordinals(Vec<usize>),
}

impl FromStr for GpuSelection {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value == "all" {
            return Ok(GpuSelection::All);
        }
        let mut ordinals = Vec::new();
        for part in value.split(',') {
            let ordinal = part
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{part:?} is not a GPU ordinal: expected all, or N,M,…"))?;
            if ordinals.contains(&ordinal) {
                return Err(format!("GPU {ordinal} is named twice"));
            }
            ordinals.push(ordinal);
        }
        Ok(GpuSelection::Ordinals(ordinals))
    }
}

impl GpuSelection {
    /// Opens every GPU selected, in order, or says in one line which one cannot be opened.
    pub fn open(&self) -> Result<Vec<(usize, Device)>, DeviceError> {
        let ordinals = match self {
            GpuSelection::Ordinals(ordinals) => ordinals.clone(),
            GpuSelection::All => (0..visible_gpus()?).collect(),
        };
        ordinals
            .into_iter()
            .map(|ordinal| Ok((ordinal, DeviceSpec::Cuda(ordinal).open()?)))
            .collect()
    }
}

#[cfg(not(feature = "cuda"))]
fn visible_gpus() -> Result<usize, DeviceError> {
    Err(DeviceError::NotBuiltWithCuda)
}

#[cfg(feature = "cuda")]
fn visible_gpus() -> Result<usize, DeviceError> {
    use candle_core::cuda::cudarc;

    let device = DeviceSpec::Cuda(0);
    // SAFETY: as in open_cuda, the probe only dlopens the driver's library and closes it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(DeviceError::MissingLibrary {
            device,
            library: "the CUDA driver",
            file: library_file("cuda"),
        });
    }
    match cudarc::driver::CudaContext::device_count() {
        Ok(0) => Err(DeviceError::Cuda {
            device,
            message: "--gpus all: the CUDA driver sees no GPU".into(),
        }),
        Ok(count) => Ok(count as usize),
        Err(error) => Err(DeviceError::Cuda {
            device,
            message: format!("--gpus all: counting GPUs: {error}"),
        }),
    }
}

/// Why a device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("this glmtune was built without CUDA; build it with scripts/build-cuda.sh")]
    NotBuiltWithCuda,
    #[error(
        "--device {device}: cannot load {library} ({file}); on a GPU machine, add the folder that \
         holds it (the NVIDIA driver's, or a pip package's nvidia/*/lib) to LD_LIBRARY_PATH"
    )]
    MissingLibrary {
        device: DeviceSpec,
        library: &'static str,
        file: String,
    },
    #[error("--device {device}: {message}")]
    Cuda { device: DeviceSpec, message: String },
}

/// The `--device` flag, flattened into each subcommand's arguments.
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct DeviceArg {
    /// Where the model runs: cpu, cuda (the first GPU) or cuda:N. CUDA needs a glmtune built
    /// with scripts/build-cuda.sh.
    #[arg(long = "device", value_name = "cpu|cuda|cuda:N", default_value_t = DeviceSpec::Cpu)]
    pub spec: DeviceSpec,
}

impl DeviceArg {
    /// Opens the device, or says in one line why it cannot be opened.
    pub fn device(&self) -> Result<Device, DeviceError> {
        self.spec.open()
    }
}

impl DeviceSpec {
    /// Opens the device, or says in one line why it cannot be opened.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => open_cuda(self, ordinal),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_device: DeviceSpec, _ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuiltWithCuda)
}

#[cfg(feature = "cuda")]
fn open_cuda(device: DeviceSpec, ordinal: usize) -> Result<Device, DeviceError> {
    use candle_core::cuda::cudarc;

    // What candle's CudaDevice::new opens: the driver (context, kernels), cuBLAS (matmul) and
    // cuRAND (random tensors). cudarc panics on the first call into a library it cannot load, so
    // each one is tried beforehand.
    type Probe = unsafe fn() -> bool;
    let libraries: [(&'static str, &'static str, Probe); 3] = [
        (
            "the CUDA driver",
            "cuda",
            cudarc::driver::sys::is_culib_present,
        ),
        ("cuBLAS", "cublas", cudarc::cublas::sys::is_culib_present),
        ("cuRAND", "curand", cudarc::curand::sys::is_culib_present),
    ];
    for (library, name, present) in libraries {
        // SAFETY: the probe only dlopens the library under its candidate names (running its
        // initializers, as the load that follows would) and closes it again.
        if !unsafe { present() } {
            return Err(DeviceError::MissingLibrary {
                device,
                library,
                file: library_file(name),
            });
        }
    }
    // A library that loads but lacks a symbol cudarc expects (an older CUDA than the build's)
    // still panics inside cudarc: caught here so that it too ends as one line, exit 1. The panic
    // hook is silenced meanwhile, or it would print its own lines first; the device is opened at
    // start-up, before other threads could panic in that window.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    std::panic::set_hook(hook);
    match opened {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(error)) => Err(DeviceError::Cuda {
            device,
            message: error.to_string().replace('\n', " "),
        }),
        Err(payload) => {
            let cause = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("the CUDA libraries failed to load")
                .replace('\n', " ");
            Err(DeviceError::Cuda {
                device,
                message: format!(
                    "{cause} (a CUDA library older than the CUDA 13.0 this glmtune was built for?)"
                ),
            })
        }
    }
}

/// The file name cudarc tries first for `name` with this build's CUDA major version, e.g.
/// `libcublas.so.13`, for the error message.
#[cfg(feature = "cuda")]
fn library_file(name: &str) -> String {
    use candle_core::cuda::cudarc;

    // The driver's library keeps the soname libcuda.so.1 whatever its CUDA version.
    if name == "cuda" && cfg!(target_os = "linux") {
        return "libcuda.so.1".to_owned();
    }

    let plain = format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let versioned = format!("{plain}.");
    cudarc::get_lib_name_candidates(name)
        .into_iter()
        .find(|candidate| candidate.starts_with(&versioned))
        .unwrap_or(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_cuda_and_an_ordinal() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        for bad in [
            "tpu", "", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cuda:1:2", "cpu:0",
        ] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn parses_a_gpu_selection() {
        assert_eq!("all".parse(), Ok(GpuSelection::All));
        assert_eq!("0".parse(), Ok(GpuSelection::Ordinals(vec![0])));
        assert_eq!("2, 0".parse(), Ok(GpuSelection::Ordinals(vec![2, 0])));
        for bad in ["", "0,", "cuda:0", "-1", "0,0", "All"] {
            assert!(bad.parse::<GpuSelection>().is_err(), "{bad:?} was accepted");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn gpus_need_a_cuda_build() {
        for selection in [GpuSelection::All, GpuSelection::Ordinals(vec![0])] {
            let error = selection.open().unwrap_err().to_string();
            assert!(error.contains("built without CUDA"), "{error}");
        }
    }

    #[test]
    fn displays_what_it_parses() {
        for spec in [DeviceSpec::Cpu, DeviceSpec::Cuda(0), DeviceSpec::Cuda(7)] {
            assert_eq!(spec.to_string().parse(), Ok(spec));
        }
    }

    #[test]
    fn cpu_opens() {
        assert!(DeviceArg::default().device().is_ok_and(|d| d.is_cpu()));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let error = DeviceSpec::Cuda(0).open().unwrap_err();
        assert_eq!(
            error.to_string(),
            "this glmtune was built without CUDA; build it with scripts/build-cuda.sh"
        );
    }

    // The machines that run the tests have no GPU: with the feature, opening CUDA must fail with
    // one line that names what is missing, not panic.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_without_a_gpu_is_an_error_not_a_panic() {
        if let Err(error) = DeviceSpec::Cuda(0).open() {
            let message = error.to_string();
            assert!(!message.contains('\n'), "{message}");
            assert!(message.starts_with("--device cuda:0: "), "{message}");
        }
    }
}
