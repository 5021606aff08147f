//! The key/value cache on the GPU: one keys and one values buffer per layer, starting with the
//! P-Tuning prefix's keys and values.

use candle_core::DType;

use super::floats;
use super::model::GpuModel;
use crate::error::Result;
use crate::model::PrefixEncoder;

/// Keys and values of every layer, `[kv_heads, capacity, head_dim]` each, on the GPU.
pub struct GpuCache {
    pub(super) keys: Vec<wgpu::Buffer>,
    pub(super) values: Vec<wgpu::Buffer>,
    pub(super) capacity: usize,
    pub(crate) len: usize,
}

impl GpuCache {
    /// Positions filled so far (the prefix included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl GpuModel {
    /// An empty cache for `capacity` positions, holding the prefix's keys and values first.
    pub fn new_cache(&self, capacity: usize, prefix: Option<&PrefixEncoder>) -> Result<GpuCache> {
        let (heads, head_dim) = (self.config.kv_heads(), self.config.head_dim());
        let prefix_len = prefix.map_or(0, |p| p.config.pre_seq_len);
        let capacity = capacity.max(prefix_len + 1);
        let mut cache = GpuCache {
            keys: Vec::new(),
            values: Vec::new(),
            capacity,
            len: prefix_len,
        };
        let prefix_values = match prefix {
            Some(p) => Some(p.key_values(&self.config, 1, DType::F32)?),
            None => None,
        };
        for layer in 0..self.config.num_layers {
            let key = self.gpu.scratch("keys", heads * capacity * head_dim);
            let value = self.gpu.scratch("values", heads * capacity * head_dim);
            if let Some(kv) = &prefix_values {
                let (k, v) = &kv[layer];
                let (k, v) = (floats(k)?, floats(v)?);
                // [1, heads, P, head_dim] into the first P rows of each head.
                for h in 0..heads {
                    let rows = h * prefix_len * head_dim..(h + 1) * prefix_len * head_dim;
                    let at = (h * capacity * head_dim * 4) as u64;
                    self.gpu
                        .queue
                        .write_buffer(&key, at, bytemuck::cast_slice(&k[rows.clone()]));
                    self.gpu
                        .queue
                        .write_buffer(&value, at, bytemuck::cast_slice(&v[rows]));
                }
            }
            cache.keys.push(key);
            cache.values.push(value);
        }
        Ok(cache)
    }
}
