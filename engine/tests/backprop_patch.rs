//! The vendored candle's backward (vendor/candle-core/PATCHED.md): a tensor that tracks no variable
//! gets no gradient on any op, the first gradient of a tensor is stored as it is, and gelu's
//! gradient is one fused pass on the CPU.

use candle_core::{DType, Device, Tensor, Var};

/// P-Tuning's case: only the prefix is a variable; weights, masks and constants are frozen. None of
/// them may get a gradient (a buffer the size of each, kept to the end of the backward), on any op.
#[test]
fn frozen_operands_get_no_gradient_on_any_op() {
    let dev = Device::Cpu;
    let x = Var::randn(0f32, 1., (4, 8), &dev).unwrap();
    let w = Tensor::randn(0f32, 1., (8, 8), &dev).unwrap();
    let scale = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
    let shift = Tensor::randn(0f32, 0.1, (4, 8), &dev).unwrap();
    let mask = Tensor::randn(0f32, 1., (4, 8), &dev)
        .unwrap()
        .ge(0.)
        .unwrap();
    let fill = Tensor::zeros((4, 8), DType::F32, &dev).unwrap();
    let h = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
    let h = h.broadcast_mul(&scale).unwrap();
    let h = (h + &shift).unwrap();
    let h = (h - &shift).unwrap();
    let h = h.broadcast_div(&scale).unwrap();
    let h = mask.where_cond(&fill, &h).unwrap();
    let h = Tensor::cat(&[&h, &shift], 1).unwrap();
    let y = h.gelu().unwrap().sum_all().unwrap();
    let store = y.backward().unwrap();
    assert!(store.get(x.as_tensor()).is_some());
    for (name, frozen) in [
        ("weight", &w),
        ("scale", &scale),
        ("shift", &shift),
        ("fill", &fill),
    ] {
        assert!(
            store.get(frozen).is_none(),
            "the frozen {name} got a gradient"
        );
    }
}

/// The gradient through a chain is the analytic one: d/dx Σ gelu(2x + c) = 2 · gelu'(2x + c).
/// Checks the stored-as-is first gradient (no zeros added) and the fused gelu backward against the
/// derivative computed in f64 here.
#[test]
fn gradients_through_the_patched_ops_are_the_analytic_ones() {
    let dev = Device::Cpu;
    let values: Vec<f32> = (0..4099).map(|i| (i as f32 - 2049.) / 300.).collect();
    let shift = Tensor::full(0.25f32, values.len(), &dev).unwrap();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let x = Var::from_tensor(
            &Tensor::from_vec(values.clone(), values.len(), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let u = ((x.as_tensor() * 2.).unwrap() + shift.to_dtype(dtype).unwrap()).unwrap();
        let store = u.gelu().unwrap().sum_all().unwrap().backward().unwrap();
        let grad = store
            .get(x.as_tensor())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let inputs = u.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        let tolerance = match dtype {
            DType::F32 => 1e-5,
            _ => 1e-2,
        };
        for (i, (&g, &u)) in grad.iter().zip(&inputs).enumerate() {
            let u = u as f64;
            let t = (0.0356774 * u * u * u + 0.797885 * u).tanh();
            let d = 0.5 * t + (0.0535161 * u * u * u + 0.398942 * u) * (1. - t * t) + 0.5;
            let want = 2. * d;
            assert!(
                (g as f64 - want).abs() <= tolerance * want.abs().max(1.),
                "{dtype:?} x[{i}] (u = {u}): gradient {g}, want {want}"
            );
        }
    }
}
