//! The wgpu backend: the forward of every ChatGLM generation in WGSL compute kernels (Vulkan, Metal, DX12 or GL
//! natively; WebGPU in browsers), with f32 arithmetic everywhere so that adapters without
//! `shader-f16` (SwiftShader, many phones) run it.
//!
//! - [`Gpu`] opens an adapter and compiles the kernels (`*.wgsl` beside this file);
//! - [`weights`] uploads weight matrices tensor by tensor in the kernels' layouts (f32, f16,
//!   q8_0, q4_0), split across buffers where a matrix passes the adapter's binding limit;
//! - `upload` puts a model there tensor by tensor, from a CPU model or straight from `model.gguf`;
//! - [`model`] runs the forward over a GPU-resident key/value cache (`cache`) that starts with
//!   the prefix;
//! - `decode` generates from it and gives whole-sequence logits.

mod cache;
mod decode;
pub mod model;
mod params;
mod scratch;
mod upload;
pub mod weights;

use std::borrow::Cow;

use wgpu::util::DeviceExt;

use crate::error::{EngineError, Result};

pub use cache::GpuCache;
pub use decode::SequenceInputs;
pub use model::{GpuModel, Logits};
pub use upload::GpuModelBuilder;

/// A tensor's values as f32, flattened: what every kernel reads.
fn floats(tensor: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(tensor
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

fn gpu_error(message: impl Into<String>) -> EngineError {
    EngineError::Gpu(message.into())
}

/// The compiled kernels.
struct Kernels {
    /// By weight layout: f32, f16, q8_0, q4_0; a workgroup a row, and an invocation a row.
    matmul: [wgpu::ComputePipeline; 4],
    matmul_rows: [wgpu::ComputePipeline; 4],
    layer_norm: wgpu::ComputePipeline,
    rms_norm: wgpu::ComputePipeline,
    scale_add: wgpu::ComputePipeline,
    gelu: wgpu::ComputePipeline,
    swiglu: wgpu::ComputePipeline,
    round_activations: wgpu::ComputePipeline,
    gather: wgpu::ComputePipeline,
    rotate_and_cache: wgpu::ComputePipeline,
    attend: wgpu::ComputePipeline,
}

/// An open adapter with the kernels compiled for it.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    kernels: Kernels,
    /// The largest buffer one binding may see.
    max_binding: u64,
    /// "llvmpipe (Vulkan)" and the like.
    pub description: String,
    /// Whether matrix products give each output row one invocation rather than a workgroup
    /// (chosen for adapters that run on the CPU).
    pub row_per_invocation: bool,
    /// Whether products with q8_0/q4_0 weights round the activations to q8_0 first, as GGML's
    /// and candle's CPU kernels do (on by default: both backends then compute the same numbers
    /// from one file). Off, the GPU multiplies the exact activations: the dequantized model.
    pub round_activations: bool,
}

impl Gpu {
    /// Opens the best adapter available (`WGPU_BACKEND` and `WGPU_ADAPTER_NAME` may pick one),
    /// with the adapter's own storage limits.
    pub async fn new() -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                gpu_error(format!(
                    "no GPU adapter ({e}); on Linux without a GPU, install Mesa's lavapipe (apt-get install mesa-vulkan-drivers)"
                ))
            })?;
        let info = adapter.get_info();
        let supported = adapter.limits();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: supported.max_storage_buffer_binding_size,
            max_buffer_size: supported.max_buffer_size,
            max_storage_buffers_per_shader_stage: supported
                .max_storage_buffers_per_shader_stage
                .max(8),
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("glmtune"),
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| gpu_error(format!("the adapter {} refused a device: {e}", info.name)))?;
        let kernels = Kernels::compile(&device);
        let max_binding = supported
            .max_storage_buffer_binding_size
            .min(supported.max_buffer_size);
        Ok(Gpu {
            device,
            queue,
            kernels,
            max_binding,
            row_per_invocation: info.device_type == wgpu::DeviceType::Cpu,
            round_activations: true,
            description: if info.name.is_empty() {
                format!("{:?}", info.backend)
            } else {
                format!("{} ({:?})", info.name, info.backend)
            },
        })
    }

    /// [`Gpu::new`], blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn blocking() -> Result<Self> {
        pollster::block_on(Self::new())
    }

    /// A storage buffer holding `contents`.
    fn storage(&self, label: &str, contents: &[u8]) -> wgpu::Buffer {
        // Zero-sized bindings are invalid: an empty buffer gets one word.
        let contents: Cow<[u8]> = if contents.is_empty() {
            Cow::Owned(vec![0; 4])
        } else {
            Cow::Borrowed(contents)
        };
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            })
    }

    /// A zeroed storage buffer of `floats` f32s.
    fn scratch(&self, label: &str, floats: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (floats.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Records one dispatch of `pipeline` with `params` at binding 0 and `buffers` at theirs.
    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        params: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) {
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: params,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        entries.extend(
            buffers
                .iter()
                .map(|(binding, buffer)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: buffer.as_entire_binding(),
                }),
        );
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
    }

    /// Copies the first `floats` f32s of `buffer` back to the CPU through `staging` (a
    /// `MAP_READ | COPY_DST` buffer at least as large, unmapped).
    async fn read_via(
        &self,
        buffer: &wgpu::Buffer,
        staging: &wgpu::Buffer,
        floats: usize,
    ) -> Result<Vec<f32>> {
        let size = (floats * 4) as u64;
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..size);
        let (sender, receiver) = futures_channel::oneshot::channel();
        slice.map_async(wgpu::MapMode::Read, move |outcome| {
            let _ = sender.send(outcome);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| gpu_error(format!("waiting for the GPU: {e}")))?;
        receiver
            .await
            .map_err(|_| gpu_error("the GPU dropped a read"))?
            .map_err(|e| gpu_error(format!("reading back from the GPU: {e}")))?;
        let view = slice
            .get_mapped_range()
            .map_err(|e| gpu_error(format!("reading back from the GPU: {e}")))?;
        let values = bytemuck::cast_slice::<u8, f32>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(values)
    }

    /// GB/s the device moves in a buffer-to-buffer copy of `bytes`, counting each byte read once
    /// (best of three; native only): the ceiling for a decode that streams every weight.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn copy_bandwidth(&self, bytes: u64) -> Result<f64> {
        let bytes = bytes.min(self.max_binding) / 4 * 4;
        let buffer = |label| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (from, to) = (buffer("copy source"), buffer("copy target"));
        let mut best = 0.0f64;
        for _ in 0..4 {
            let start = std::time::Instant::now();
            let mut encoder = self.device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&from, 0, &to, 0, bytes);
            self.queue.submit([encoder.finish()]);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| gpu_error(format!("waiting for the GPU: {e}")))?;
            best = best.max(bytes as f64 / start.elapsed().as_secs_f64() / 1e9);
        }
        Ok(best)
    }
}

impl Kernels {
    fn compile(device: &wgpu::Device) -> Self {
        // Each file gets the shared reductions (and the attention kernels their parameters).
        let module = |label: &str, sources: &[&str]| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(sources.concat().into()),
            })
        };
        let common = include_str!("common.wgsl");
        let attention_params = include_str!("attention_params.wgsl");
        let matmul = module("matmul", &[common, include_str!("matmul.wgsl")]);
        let rows = module("rows", &[common, include_str!("rows.wgsl")]);
        let gather = module("gather", &[include_str!("gather.wgsl")]);
        let rotary = module("rotary", &[attention_params, include_str!("rotary.wgsl")]);
        let attention = module(
            "attention",
            &[common, attention_params, include_str!("attention.wgsl")],
        );
        let pipeline = |module: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        Kernels {
            matmul: [
                pipeline(&matmul, "matmul_f32"),
                pipeline(&matmul, "matmul_f16"),
                pipeline(&matmul, "matmul_q8_0"),
                pipeline(&matmul, "matmul_q4_0"),
            ],
            matmul_rows: [
                pipeline(&matmul, "matmul_rows_f32"),
                pipeline(&matmul, "matmul_rows_f16"),
                pipeline(&matmul, "matmul_rows_q8_0"),
                pipeline(&matmul, "matmul_rows_q4_0"),
            ],
            layer_norm: pipeline(&rows, "layer_norm"),
            rms_norm: pipeline(&rows, "rms_norm"),
            scale_add: pipeline(&rows, "scale_add"),
            gelu: pipeline(&rows, "gelu"),
            swiglu: pipeline(&rows, "swiglu"),
            round_activations: pipeline(&rows, "round_activations"),
            gather: pipeline(&gather, "gather"),
            rotate_and_cache: pipeline(&rotary, "rotate_and_cache"),
            attend: pipeline(&attention, "attend"),
        }
    }
}

/// Workgroups for `count` invocations of 64 lanes, spread over y past the x limit.
fn grid(count: usize) -> (u32, u32, u32) {
    let groups = count.div_ceil(64).max(1);
    let x = groups.min(65535);
    (x as u32, groups.div_ceil(65535) as u32, 1)
}
