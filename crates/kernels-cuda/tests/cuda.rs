//! The split-K kernel on CUDA against the f64 reference of `sparsity-kernels` (the same cases as
//! its lavapipe test, plus LLM-sized shapes): on a GPU machine,
//! `CUDARC_CUDA_VERSION=13000 cargo test -p sparsity-kernels-cuda --features cuda --release`.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use half::{bf16, f16};
use ndarray::ArrayView1;
use sparsity_kernels::cube_launch::CubeLaunch;
use sparsity_kernels::reference_gemv_masked;
use sparsity_kernels_cuda::{CudaGemv, CudaWeight, bench_gpu, cuda_client, device_copy_bandwidth};

#[path = "../../kernels/tests/support/mod.rs"]
mod support;
use support::{case, check};

const SHAPES: [(usize, usize, u64); 7] = [
    (1, 1, 0),
    (33, 70, 1),
    (300, 129, 2),
    (257, 1000, 3),
    (4, 5, 4),
    (1028, 77, 5),
    (4096, 4096, 6),
];

/// Every candidate, every τ (0, 0.3, 0.7, above every |x|), tuned and dense paths, for weight
/// type `T`: within 1e-5 of the reference on the rounded weights, 1e-2 of the f32 one.
fn suite<T: CudaWeight>(to: fn(f32) -> T, from: fn(T) -> f32) {
    let client = cuda_client(0).expect("a CUDA device");
    for (n_out, n_in, seed) in SHAPES {
        let (w_t, x) = case(n_out, n_in, seed);
        let w_typed = w_t.mapv(to);
        let w_round = w_typed.mapv(from);
        let g = CudaGemv::new_typed(client.clone(), w_typed.view()).unwrap();
        assert_eq!(g.weight_type(), T::TYPE);
        let xv = ArrayView1::from(&x);
        for tau in [0.0f32, 0.3, 0.7, 2.0] {
            let exact = reference_gemv_masked(w_round.view(), xv, tau).unwrap();
            let f32_ref = reference_gemv_masked(w_t.view(), xv, tau).unwrap();
            for launch in CubeLaunch::CANDIDATES {
                let got = g.gemv_with(&x, tau, launch).unwrap();
                let what = format!("{:?} {n_out}x{n_in} tau {tau} {launch:?}", T::TYPE);
                check(&got, &exact, 1e-5, &what);
                check(&got, &f32_ref, 1e-2, &what);
            }
            let tuned = g.gemv_masked(&x, tau).unwrap();
            check(&tuned, &exact, 1e-5, "tuned");
            if tau >= 2.0 {
                assert!(
                    tuned.iter().all(|v| *v == 0.0),
                    "tau above every |x| gives 0"
                );
            }
        }
        assert!(
            g.gemv_dense(&vec![0.0; n_in])
                .unwrap()
                .iter()
                .all(|v| *v == 0.0)
        );
        let dense = reference_gemv_masked(w_round.view(), xv, 0.0).unwrap();
        check(&g.gemv_dense(&x).unwrap(), &dense, 1e-5, "dense");
        assert!(
            g.gemv_with(&x[1..], 0.0, CubeLaunch::CANDIDATES[0])
                .is_err()
        );
        assert!(g.gemv_masked(&x, -1.0).is_err());
    }
}

#[test]
fn f32_weights_equal_the_reference() {
    suite::<f32>(|v| v, |v| v);
}

#[test]
fn f16_weights_equal_the_reference() {
    suite::<f16>(f16::from_f32, f16::to_f32);
}

#[test]
fn bf16_weights_equal_the_reference() {
    suite::<bf16>(bf16::from_f32, bf16::to_f32);
}

/// The benchmark's measured sparsity follows the target, the masked path at 90 % beats the
/// dense one, and the copy probe gives a plausible bandwidth.
#[test]
fn gpu_bench_rows_are_consistent() {
    let client = cuda_client(0).expect("a CUDA device");
    let bw = device_copy_bandwidth(&client, 1 << 30, 5).unwrap();
    eprintln!("device copy: {bw:.0} GB/s");
    assert!(bw > 100.0, "{bw}");
    let rows = bench_gpu::<bf16>(&client, 4096, 4096, &[0.5, 0.9], 256 << 20, 50, 7).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].sparsity.is_none() && rows[0].measured_sparsity == 0.0);
    for (r, s) in rows[1..].iter().zip([0.5, 0.9]) {
        assert!((r.measured_sparsity - s).abs() < 0.01, "{r:?}");
    }
    assert!(rows[2].speedup_vs_dense > 1.0, "{:?}", rows[2]);
}
