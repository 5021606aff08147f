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

/// A narrowed tensor's gradient is added into its region in place (PATCHED.md): three narrows of one
/// tensor (as the query/key/value split of a fused projection) and the whole tensor used as well sum
/// to the analytic gradient, and a gradient buffer shared with another operand (an `add` stores
/// the same gradient for both) is copied before a region is added, never written through.
#[test]
fn narrowed_gradients_add_into_their_region_without_touching_a_shared_buffer() {
    let dev = Device::Cpu;
    let vals = |seed: f32| -> Tensor {
        let v: Vec<f32> = (0..36).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
        Tensor::from_vec(v, (4, 9), &dev).unwrap()
    };
    let (a, b, c, d) = (vals(1.), vals(2.), vals(3.), vals(4.));
    for add_first in [true, false] {
        let p = Var::from_tensor(&vals(5.)).unwrap();
        let q = Var::from_tensor(&vals(6.)).unwrap();
        let y = (p.as_tensor() * 2.).unwrap();
        let through_add = ((&y + q.as_tensor()).unwrap() * &d)
            .unwrap()
            .sum_all()
            .unwrap();
        let narrowed = [(0, &a), (3, &b), (6, &c)]
            .into_iter()
            .map(|(start, w)| {
                (y.narrow(1, start, 3).unwrap() * w.narrow(1, start, 3).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
            })
            .reduce(|s, t| (s + t).unwrap())
            .unwrap();
        let loss = if add_first {
            (through_add + narrowed).unwrap()
        } else {
            (narrowed + through_add).unwrap()
        };
        let store = loss.backward().unwrap();
        let grad_p = store.get(p.as_tensor()).unwrap();
        let grad_q = store.get(q.as_tensor()).unwrap();
        let abc = Tensor::cat(
            &[
                a.narrow(1, 0, 3).unwrap(),
                b.narrow(1, 3, 3).unwrap(),
                c.narrow(1, 6, 3).unwrap(),
            ],
            1,
        )
        .unwrap();
        let want_p = ((abc + &d).unwrap() * 2.).unwrap();
        let diff = |x: &Tensor, y: &Tensor| -> f32 {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(diff(grad_p, &want_p) < 1e-6, "add_first {add_first}: p");
        assert_eq!(diff(grad_q, &d), 0., "add_first {add_first}: q");
    }
}

/// The forward gelu (tanh approximation, PATCHED.md: computed as x·σ(2u) by a vectorized kernel)
/// against the same function in f64, in every float dtype of training.
#[test]
fn gelu_matches_the_f64_function() {
    let dev = Device::Cpu;
    let values: Vec<f32> = (0..40_001).map(|i| (i as f32 - 20_000.) / 2_000.).collect();
    for (dtype, tolerance) in [(DType::F32, 2e-6), (DType::BF16, 8e-3), (DType::F16, 1e-3)] {
        let x = Tensor::from_vec(values.clone(), values.len(), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let y = x.gelu().unwrap().to_dtype(DType::F32).unwrap();
        let inputs = x.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        for (&v, &y) in inputs.iter().zip(&y.to_vec1::<f32>().unwrap()) {
            let v = v as f64;
            let u = 0.7978845608028654 * v * (1.0 + 0.044715 * v * v);
            let want = 0.5 * v * (1.0 + u.tanh());
            assert!(
                (y as f64 - want).abs() <= tolerance * want.abs().max(1e-2),
                "{dtype:?} gelu({v}) = {y}, want {want}"
            );
        }
    }
}
