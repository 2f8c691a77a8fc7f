//! Runtime-independent part of the split-K GPU kernel: launch parameters, the launch plan of
//! a shape, the sparsity bin of the tuning key and the per-key tuner. Shared by the CubeCL
//! wgpu client (`sparsity_kernels::cube`, feature `cubecl-wgpu`) and the CUDA client (crate
//! `sparsity-kernels-cuda`, feature `cuda`), so both tune and launch the same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{KernelError, Result};

/// Launch parameters of the split-K kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CubeLaunch {
    /// Units per cube along the outputs.
    pub block: u32,
    /// Number of input splits (cubes along y).
    pub splits: u32,
    /// Outputs per unit, loaded as one vector (1 = scalar loads; 4 needs `out` divisible by 4,
    /// else the scalar kernel runs).
    #[serde(default = "one")]
    pub vector: u32,
}

fn one() -> u32 {
    1
}

impl CubeLaunch {
    /// The candidates the tuner times.
    pub const CANDIDATES: [CubeLaunch; 9] = [
        CubeLaunch::new(64, 1, 1),
        CubeLaunch::new(64, 4, 1),
        CubeLaunch::new(128, 8, 1),
        CubeLaunch::new(128, 16, 1),
        CubeLaunch::new(256, 16, 1),
        CubeLaunch::new(256, 32, 1),
        CubeLaunch::new(64, 8, 4),
        CubeLaunch::new(128, 16, 4),
        CubeLaunch::new(256, 32, 4),
    ];

    /// `block` units per cube, `splits` input splits, `vector` outputs per unit.
    pub const fn new(block: u32, splits: u32, vector: u32) -> Self {
        Self {
            block,
            splits,
            vector,
        }
    }
}

/// Sparsity bin of an input for the tuning key (tenths, like the original's `SPARSITY_BIN`).
pub fn sparsity_bin(x: &[f32], tau: f32) -> u8 {
    if x.is_empty() {
        return 0;
    }
    let dropped = x.iter().filter(|v| v.abs() <= tau).count();
    ((dropped * 10) / x.len()).min(9) as u8
}

/// The geometry of one launch of a `[in, out]` weight: pass 1 runs `blocks × splits` cubes of
/// `block` units, each unit owning `vector` consecutive outputs over `rows_per_split` inputs;
/// pass 2 runs `reduce_blocks` cubes of `block` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchPlan {
    /// Cubes along the outputs in pass 1.
    pub blocks: u32,
    /// Input splits actually used (at most `n_in`, no empty split).
    pub splits: usize,
    /// Units per cube.
    pub block: u32,
    /// Outputs per unit in pass 1 (the requested width when it divides `n_out`, else 1).
    pub vector: usize,
    /// Units of pass 1 (`n_out / vector`).
    pub units: usize,
    /// Input rows per split.
    pub rows_per_split: usize,
    /// Cubes of pass 2 (one unit per output).
    pub reduce_blocks: u32,
}

impl LaunchPlan {
    /// Plans `launch` for an `n_in × n_out` weight (both ≥ 1); errors on a zero block or
    /// split count, or a vector width other than 1, 2 or 4.
    pub fn new(n_in: usize, n_out: usize, launch: CubeLaunch) -> Result<Self> {
        if launch.block == 0 || launch.splits == 0 || !matches!(launch.vector, 1 | 2 | 4) {
            return Err(KernelError::Device(format!(
                "launch {launch:?}: block and splits must be at least 1, vector 1, 2 or 4"
            )));
        }
        if n_in == 0 || n_out == 0 {
            return Err(KernelError::EmptyTensor {
                tensor: "weight_t",
                shape: vec![n_in, n_out],
            });
        }
        let splits = (launch.splits as usize).min(n_in);
        let rows_per_split = n_in.div_ceil(splits);
        let splits = n_in.div_ceil(rows_per_split);
        let vector = match launch.vector as usize {
            v if n_out.is_multiple_of(v) => v,
            _ => 1,
        };
        let units = n_out / vector;
        Ok(Self {
            blocks: units.div_ceil(launch.block as usize) as u32,
            splits,
            block: launch.block,
            vector,
            units,
            rows_per_split,
            reduce_blocks: n_out.div_ceil(launch.block as usize) as u32,
        })
    }
}

/// Element type of a weight on the device (accumulation is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CubeWeightType {
    /// f32.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// Checks that `x` has the weight's input length.
pub fn check_input(x: &[f32], n_in: usize, n_out: usize) -> Result<()> {
    if x.len() != n_in {
        return Err(KernelError::ShapeMismatch {
            tensor: "x",
            what: "length",
            got: x.len(),
            expected: n_in,
            context: format!("weight_t is [in, out] = [{n_in}, {n_out}]"),
        });
    }
    Ok(())
}

/// Per-key launch tuner: the key is (out, in, sparsity bin); each key is timed once over
/// [`CubeLaunch::CANDIDATES`] (median of 3 runs each), then cached.
#[derive(Debug, Default)]
pub struct LaunchTuner {
    tuned: Mutex<HashMap<(usize, usize, u8), CubeLaunch>>,
}

impl LaunchTuner {
    /// An empty tuner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached launch for the key, or the fastest candidate under `run` (which must run
    /// the whole GEMV to completion, results read back).
    pub fn get_or_tune(
        &self,
        key: (usize, usize, u8),
        mut run: impl FnMut(CubeLaunch) -> Result<()>,
    ) -> Result<CubeLaunch> {
        let poisoned = |e: std::sync::PoisonError<_>| KernelError::Device(e.to_string());
        if let Some(l) = self.tuned.lock().map_err(poisoned)?.get(&key) {
            return Ok(*l);
        }
        let mut best: Option<(f64, CubeLaunch)> = None;
        for cand in CubeLaunch::CANDIDATES {
            let mut times = [0f64; 3];
            for t in &mut times {
                let start = Instant::now();
                run(cand)?;
                *t = start.elapsed().as_secs_f64();
            }
            times.sort_by(f64::total_cmp);
            if best.is_none_or(|(b, _)| times[1] < b) {
                best = Some((times[1], cand));
            }
        }
        let chosen = best.map_or(CubeLaunch::CANDIDATES[0], |(_, c)| c);
        tracing::debug!(?key, ?chosen, "cube gemv tuned");
        self.tuned.lock().map_err(poisoned)?.insert(key, chosen);
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_clamps_splits_and_falls_back_to_scalar_loads() {
        let p = LaunchPlan::new(10, 6, CubeLaunch::new(4, 32, 4)).unwrap();
        // 32 splits of 10 rows: 10 splits of one row
        assert_eq!((p.splits, p.rows_per_split), (10, 1));
        // 6 outputs are not a multiple of 4: scalar loads, 6 units in 2 cubes of 4
        assert_eq!((p.vector, p.units, p.blocks, p.reduce_blocks), (1, 6, 2, 2));
        let p = LaunchPlan::new(7, 8, CubeLaunch::new(64, 3, 4)).unwrap();
        // 7 rows in splits of ceil(7/3) = 3: 3 splits (3 + 3 + 1)
        assert_eq!(
            (p.splits, p.rows_per_split, p.vector, p.units),
            (3, 3, 4, 2)
        );
        assert!(LaunchPlan::new(7, 8, CubeLaunch::new(0, 1, 1)).is_err());
        assert!(LaunchPlan::new(7, 8, CubeLaunch::new(64, 1, 3)).is_err());
        assert!(LaunchPlan::new(0, 8, CubeLaunch::new(64, 1, 1)).is_err());
    }

    #[test]
    fn tuner_caches_per_key() {
        let tuner = LaunchTuner::new();
        let mut calls = 0;
        let a = tuner
            .get_or_tune((8, 8, 0), |_| {
                calls += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(calls, 3 * CubeLaunch::CANDIDATES.len());
        let b = tuner
            .get_or_tune((8, 8, 0), |_| Err(KernelError::Device("not called".into())))
            .unwrap();
        assert_eq!(a, b);
        // another bin is tuned anew, and a failing run is an error, not a made-up choice
        assert!(
            tuner
                .get_or_tune((8, 8, 5), |_| Err(KernelError::Device("boom".into())))
                .is_err()
        );
    }

    #[test]
    fn sparsity_bins_are_tenths() {
        assert_eq!(sparsity_bin(&[0.0, 1.0, 0.0, 1.0], 0.0), 5);
        assert_eq!(sparsity_bin(&[0.0; 3], 0.0), 9);
        assert_eq!(sparsity_bin(&[], 0.0), 0);
        assert_eq!(sparsity_bin(&[2.0, 0.5], 1.0), 5);
    }
}
