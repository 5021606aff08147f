//! The keys and values of past positions, per layer.
//!
//! For inference each layer's keys and values sit at the start of buffers with room to grow: a
//! new token is written in place, where joining the whole cache to it (`cat`) copied every past
//! position at every step and made a long answer's cost grow with the square of its length.
//! When gradients flow through them (training's prefix), they are plain tensors joined by `cat`,
//! which the backward can follow.

use candle_core::Tensor;

use crate::error::Result;

/// Positions a buffer grows by at least, so that growing is rare.
const GROW: usize = 128;

/// One layer's cached keys and values `[batch, kv_heads, len, head_dim]`.
///
/// Not `Clone`: two copies would write their new positions into the same buffers.
#[derive(Debug)]
pub struct LayerCache {
    key: Tensor,
    value: Tensor,
    /// Positions held (the buffers may have room for more).
    len: usize,
}

impl LayerCache {
    /// A cache holding exactly `key` and `value` (a prefix).
    pub fn new(key: Tensor, value: Tensor) -> Result<Self> {
        let len = key.dim(2)?;
        Ok(LayerCache { key, value, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `key` and `value` (`[batch, kv_heads, seq, head_dim]`) and returns every position's
    /// keys and values; `capacity` is how many positions the buffers should hold when they grow.
    pub fn append(
        &mut self,
        key: &Tensor,
        value: &Tensor,
        capacity: usize,
    ) -> Result<(Tensor, Tensor)> {
        let seq = key.dim(2)?;
        let tracked = [&self.key, &self.value, key, value]
            .iter()
            .any(|t| t.track_op());
        if tracked {
            let past = |t: &Tensor| t.narrow(2, 0, self.len);
            self.key = Tensor::cat(&[&past(&self.key)?, key], 2)?;
            self.value = Tensor::cat(&[&past(&self.value)?, value], 2)?;
            self.len += seq;
            return Ok((self.key.clone(), self.value.clone()));
        }
        let room = self.key.dim(2)?;
        if self.len + seq > room || !self.key.is_contiguous() || !self.value.is_contiguous() {
            let wanted = (self.len + seq).max(capacity).max(room + GROW);
            self.key = grown(&self.key, self.len, wanted)?;
            self.value = grown(&self.value, self.len, wanted)?;
        }
        self.key.slice_set(&key.contiguous()?, 2, self.len)?;
        self.value.slice_set(&value.contiguous()?, 2, self.len)?;
        self.len += seq;
        Ok((
            self.key.narrow(2, 0, self.len)?,
            self.value.narrow(2, 0, self.len)?,
        ))
    }
}

/// A zeroed buffer of `positions` positions holding the first `len` of `buffer`.
fn grown(buffer: &Tensor, len: usize, positions: usize) -> Result<Tensor> {
    let mut dims = buffer.dims().to_vec();
    dims[2] = positions;
    let grown = Tensor::zeros(dims, buffer.dtype(), buffer.device())?;
    if len > 0 {
        grown.slice_set(&buffer.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
    }
    Ok(grown)
}

/// Cached keys and values of every layer.
#[derive(Debug, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<LayerCache>>,
    /// Positions the buffers are made for when they grow (the prompt plus the answer's length).
    pub(crate) capacity: usize,
}

impl KvCache {
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: (0..num_layers).map(|_| None).collect(),
            capacity: 0,
        }
    }

    /// A cache that starts with the prefix keys and values of a P-Tuning v2 adapter.
    pub fn from_prefix(prefix: Vec<(Tensor, Tensor)>) -> Result<Self> {
        Ok(Self {
            layers: prefix
                .into_iter()
                .map(|(k, v)| LayerCache::new(k, v).map(Some))
                .collect::<Result<_>>()?,
            capacity: 0,
        })
    }

    /// Makes the buffers hold `positions` positions (prefix included) when they are made, so a
    /// generation of known length never grows them.
    pub fn reserve(&mut self, positions: usize) {
        self.capacity = self.capacity.max(positions);
    }

    /// Number of cached positions (prefix included).
    pub fn len(&self) -> usize {
        match self.layers.first() {
            Some(Some(layer)) => layer.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends to a layer's cache, starting one when there is none.
pub(crate) fn append(
    cache: &mut Option<LayerCache>,
    key: Tensor,
    value: Tensor,
    capacity: usize,
) -> Result<(Tensor, Tensor)> {
    match cache {
        Some(layer) => layer.append(&key, &value, capacity),
        None => {
            let mut layer = LayerCache::new(key.narrow(2, 0, 0)?, value.narrow(2, 0, 0)?)?;
            let joined = layer.append(&key, &value, capacity)?;
            *cache = Some(layer);
            Ok(joined)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn positions(start: usize, n: usize) -> Tensor {
        Tensor::arange(start as f32, (start + n) as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, n, 1))
            .unwrap()
            .broadcast_as((1, 2, n, 3))
            .unwrap()
            .contiguous()
            .unwrap()
    }

    #[test]
    fn appends_in_place_what_cat_would_join() {
        let mut cache = None;
        let mut all = Vec::new();
        for (start, n) in [(0, 5), (5, 1), (6, 130), (136, 1)] {
            let (key, value) =
                append(&mut cache, positions(start, n), positions(start, n), 0).unwrap();
            all.push(positions(start, n));
            let expected = Tensor::cat(&all, 2).unwrap();
            for got in [key, value] {
                assert_eq!(got.dims(), expected.dims());
                let diff = (got - &expected).unwrap().abs().unwrap().sum_all().unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
            }
        }
        assert_eq!(cache.unwrap().len(), 137);
    }

    #[test]
    fn a_tracked_prefix_keeps_its_gradient() {
        let prefix = Var::from_tensor(&positions(0, 2)).unwrap();
        let mut cache =
            Some(LayerCache::new(prefix.as_tensor().clone(), prefix.as_tensor().clone()).unwrap());
        let (key, _) = append(&mut cache, positions(2, 3), positions(2, 3), 0).unwrap();
        let grads = key.sum_all().unwrap().backward().unwrap();
        let grad = grads
            .get(prefix.as_tensor())
            .expect("the prefix has a gradient");
        assert_eq!(grad.dims(), &[1, 2, 2, 3]);
    }
}
