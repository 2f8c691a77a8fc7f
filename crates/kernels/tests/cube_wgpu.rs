//! The CubeCL split-K kernel against the f64 reference, on cubecl's wgpu runtime (lavapipe when
//! there is no GPU): `cargo test -p sparsity-kernels --features cubecl-wgpu --test cube_wgpu`.
#![cfg(feature = "cubecl-wgpu")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sparsity_kernels::cube::{CubeGemv, CubeLaunch, sparsity_bin, wgpu_client};
use sparsity_kernels::reference_gemv_masked;

mod support;
use support::case;

/// f32 within 1e-5 relative to the per-output scale Σ|W_ij x_j| of the f64 reference.
fn check(got: &[f32], want: &(ndarray::Array1<f64>, ndarray::Array1<f64>), what: &str) {
    support::check(got, want, 1e-5, what);
}

#[test]
fn split_k_kernel_equals_the_reference() {
    let client = wgpu_client().expect("a Vulkan device (install mesa-vulkan-drivers)");
    // 300, 4 and 1028 outputs take the vectorised kernel in the `vector: 4` candidates (the others
    // fall back to scalar loads); none is a multiple of the block sizes
    for (n_out, n_in, seed) in [
        (1, 1, 0),
        (33, 70, 1),
        (300, 129, 2),
        (257, 1000, 3),
        (4, 5, 4),
        (1028, 77, 5),
    ] {
        let (w_t, x) = case(n_out, n_in, seed);
        let g = CubeGemv::new(client.clone(), w_t.view()).unwrap();
        for tau in [0.0f32, 0.3, 0.7, 2.0] {
            let want =
                reference_gemv_masked(w_t.view(), ndarray::ArrayView1::from(&x), tau).unwrap();
            for launch in CubeLaunch::CANDIDATES {
                let got = g.gemv_with(&x, tau, launch).unwrap();
                check(&got, &want, &format!("{n_out}x{n_in} tau {tau} {launch:?}"));
            }
            check(&g.gemv_masked(&x, tau).unwrap(), &want, "tuned");
            if tau >= 2.0 {
                let got = g.gemv_masked(&x, tau).unwrap();
                assert!(got.iter().all(|v| *v == 0.0), "tau above every |x| gives 0");
            }
        }
        let zeros = vec![0.0f32; n_in];
        assert!(g.gemv_dense(&zeros).unwrap().iter().all(|v| *v == 0.0));
        let dense_want =
            reference_gemv_masked(w_t.view(), ndarray::ArrayView1::from(&x), 0.0).unwrap();
        check(&g.gemv_dense(&x).unwrap(), &dense_want, "dense");
        assert!(
            g.gemv_with(&x[1..], 0.0, CubeLaunch::CANDIDATES[0])
                .is_err()
        );
        assert!(g.gemv_masked(&x, -1.0).is_err());
        assert!(g.gemv_with(&x, 0.0, CubeLaunch::new(64, 1, 3)).is_err());
    }
    assert_eq!(sparsity_bin(&[0.0, 1.0, 0.0, 1.0], 0.0), 5);
}

/// f16 and bf16 weights (f32 accumulation): within 1e-5 of the f64 reference on the
/// half-rounded weights and within 1e-2 of the one on the original f32 weights, every
/// candidate (scalar and vectorised loads), at τ = 0, 0.5 and above every |x|. A device without
/// the type gives a typed error instead.
#[test]
fn half_precision_weights_equal_the_reference() {
    use half::{bf16, f16};
    use sparsity_kernels::cube::CubeWeightType;
    let client = wgpu_client().expect("a Vulkan device (install mesa-vulkan-drivers)");
    fn run<T: sparsity_kernels::cube::CubeWeight>(
        client: &cubecl::client::Client,
        to: fn(f32) -> T,
        from: fn(T) -> f32,
    ) -> bool {
        for (n_out, n_in, seed) in [(33, 70, 11), (300, 129, 12), (1028, 77, 13)] {
            let (w_t, x) = case(n_out, n_in, seed);
            let w_half = w_t.mapv(to);
            let g = match CubeGemv::new_typed(client.clone(), w_half.view()) {
                Ok(g) => g,
                Err(e) => {
                    assert!(
                        e.to_string().contains("not supported by this device"),
                        "{e}"
                    );
                    return false;
                }
            };
            assert_eq!(g.weight_type(), T::TYPE);
            let w_round = w_half.mapv(from);
            for tau in [0.0f32, 0.5, 2.0] {
                let xv = ndarray::ArrayView1::from(&x);
                let exact = reference_gemv_masked(w_round.view(), xv, tau).unwrap();
                let (y32, scale) = reference_gemv_masked(w_t.view(), xv, tau).unwrap();
                for launch in CubeLaunch::CANDIDATES {
                    let got = g.gemv_with(&x, tau, launch).unwrap();
                    let what = format!("{:?} {n_out}x{n_in} tau {tau} {launch:?}", T::TYPE);
                    check(&got, &exact, &what);
                    for (i, v) in got.iter().enumerate() {
                        let err = (f64::from(*v) - y32[i]).abs();
                        assert!(
                            err <= 1e-2 * scale[i] + 1e-30,
                            "{what} [{i}] vs f32 weights"
                        );
                    }
                }
            }
        }
        true
    }
    let f16_ran = run::<f16>(&client, f16::from_f32, f16::to_f32);
    let bf16_ran = run::<bf16>(&client, bf16::from_f32, bf16::to_f32);
    eprintln!("f16 on this device: {f16_ran}; bf16: {bf16_ran}");
    // lavapipe supports f16 storage; a device with neither would leave half precision untested
    assert!(f16_ran || bf16_ran, "{:?}", CubeWeightType::F16);
}
