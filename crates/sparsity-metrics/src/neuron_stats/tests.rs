//! Tests of the kernels (against the portable tile and a per-element reference), the ordered
//! waves, and the statistics over many chunks and thread counts.

use super::kernel::{BlockAcc, TILE, block_stats, block_stats_portable};
use super::*;

/// Block outputs and folded counters of one kernel run.
#[derive(Debug, PartialEq)]
struct Out {
    hist: Vec<u64>,
    sum: Vec<u64>,
    sq: Vec<u64>,
    sum_abs: Vec<u64>,
    max_abs: Vec<u64>,
    zeros: Vec<u64>,
    below: Vec<u64>,
}

/// A block kernel over f32 activations (dispatched or portable).
type Kernel = fn(&[f32], &[f64], &mut BlockAcc<f32>, bool, Option<&mut ActivationHistogram>);

/// The portable block kernel with the histogram counted the portable way.
fn portable(
    block: &[f32],
    shift: &[f64],
    acc: &mut BlockAcc<f32>,
    squares: bool,
    hist: Option<&mut ActivationHistogram>,
) {
    block_stats_portable(block, shift, acc, squares);
    if let Some(h) = hist {
        h.add_f32(block);
    }
}

/// Runs the consecutive blocks of `data` (`BLOCK_ROWS × n` each, the last one partial)
/// through a kernel, folds the counters, and returns everything as bits (the sums are the
/// last block's).
fn run(kernel: Kernel, data: &[f32], n: usize, shift: &[f64], squares: bool) -> Out {
    let mut acc = BlockAcc::<f32>::new(n, 1e-3);
    let (mut sum, mut sq) = (vec![0.0; n], vec![0.0; n]);
    let (mut sum_abs, mut max_abs) = (vec![0.0; n], vec![0.0; n]);
    let (mut zeros, mut below) = (vec![0; n], vec![0; n]);
    let mut hist = ActivationHistogram::new();
    for block in data.chunks(BLOCK_ROWS * n) {
        kernel(block, shift, &mut acc, squares, Some(&mut hist));
        // A block epilogue: take the block sums and zero them.
        for (i, a) in acc.tiles.iter_mut().enumerate() {
            sum[i * TILE..(i + 1) * TILE].copy_from_slice(&a.s);
            sq[i * TILE..(i + 1) * TILE].copy_from_slice(&a.q);
            (a.s, a.q) = ([0.0; TILE], [0.0; TILE]);
        }
        let full = acc.tiles.len() * TILE;
        for (k, a) in acc.rest.iter_mut().enumerate() {
            (sum[full + k], sq[full + k]) = (a.s, a.q);
            (a.s, a.q) = (0.0, 0.0);
        }
    }
    acc.fold(&mut sum_abs, &mut max_abs, &mut zeros, &mut below);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(hist.total(), data.len() as u64);
    Out {
        hist: hist.counts().to_vec(),
        sum: bits(&sum),
        sq: bits(&sq),
        sum_abs: bits(&sum_abs),
        max_abs: bits(&max_abs),
        zeros,
        below,
    }
}

/// The dispatched (AVX2 + FMA where present) block kernel, histogram included, equals the
/// portable one bit for bit and a plain per-element reference, for neuron counts that are and are not multiples
/// of TILE, blocks of full and partial height (and partial sub-blocks of SUB_ROWS), runs of
/// several blocks, and with and without the squares (the per-sequence path).
#[test]
fn block_kernel_matches_portable_and_reference() {
    for (n, rows) in [
        (1usize, 5usize),
        (7, 5),
        (8, 32),
        (13, 5),
        (16, 7),
        (24, 32),
        (37, 3),
        (16, 9),
        (40, 77),
    ]
    .into_iter()
    .chain([(256, 32), (256, 9), (264, 32), (512, 1), (1024, 40)])
    {
        let data: Vec<f32> = (0..rows * n)
            .map(|i| {
                let v = ((i * 7919) % 23) as f32 / 7.0 - 1.5;
                if i % 5 == 0 {
                    0.0
                } else {
                    v * 1e-3_f32.powi((i % 3) as i32)
                }
            })
            .collect();
        let shift: Vec<f64> = (0..n).map(|j| j as f64 * 0.01 - 0.1).collect();
        let fast = run(block_stats, &data, n, &shift, true);
        let portable = run(portable, &data, n, &shift, true);
        assert_eq!(fast, portable, "n = {n}, rows = {rows}");
        // Without squares: the same sums and counters, and no squares written.
        let plain = run(block_stats, &data, n, &shift, false);
        assert!(plain.sq.iter().all(|q| *q == 0), "n = {n}: squares written");
        assert_eq!(
            Out {
                sq: fast.sq.clone(),
                ..plain
            },
            fast,
            "n = {n}, rows = {rows}"
        );
        // Reference histogram: every element in the bucket of its f32 magnitude.
        let mut want = vec![0u64; crate::activation_sparsity::BUCKETS];
        for x in &data {
            want[crate::activation_sparsity::bucket_of_bits(x.to_bits())] += 1;
        }
        assert_eq!(fast.hist, want, "n = {n}, rows = {rows}: histogram");
        // Reference, per neuron: sums over the last block, counters over all rows.
        let last0 = (rows - 1) / BLOCK_ROWS * BLOCK_ROWS;
        let f = |b: u64| f64::from_bits(b);
        for j in 0..n {
            let col: Vec<f64> = (0..rows).map(|r| f64::from(data[r * n + j])).collect();
            let k = shift[j];
            let sum: f64 = col[last0..].iter().map(|x| x - k).sum();
            let sq: f64 = col[last0..].iter().map(|x| (x - k) * (x - k)).sum();
            assert!((f(fast.sum[j]) - sum).abs() <= 1e-12, "n = {n}, j = {j}");
            assert!((f(fast.sq[j]) - sq).abs() <= 1e-12 * sq.max(1e-30));
            let abs: f64 = col.iter().map(|x| x.abs()).sum();
            assert!((f(fast.sum_abs[j]) - abs).abs() <= 1e-12 * abs.max(1.0));
            let max = col.iter().fold(0f64, |m, x| m.max(x.abs()));
            assert_eq!(f(fast.max_abs[j]), max);
            assert_eq!(
                fast.zeros[j],
                col.iter().filter(|x| **x == 0.0).count() as u64
            );
            assert_eq!(
                fast.below[j],
                col.iter().filter(|x| x.abs() < 1e-3).count() as u64
            );
        }
    }
}

/// The f32 comparison threshold gives the f64 comparison's answer for every f32 near it.
#[test]
fn f32_magnitude_threshold_is_exact() {
    for t in [0.0, 1e-5, 0.01, 0.1, 1.0 / 3.0, 1.0, 1e-45, 3.5e38, 1e300] {
        let tm = <f32 as Activation>::mag_threshold(t);
        let r = t as f32;
        let mut probes = vec![0.0f32, r, r.next_up(), r.next_down(), tm, tm.next_down()];
        probes.retain(|p| p.is_finite() && *p >= 0.0);
        for a in probes {
            assert_eq!(f64::from(a) < t, a < tm, "t = {t:e}, a = {a:e}");
        }
    }
}

/// Runs `f` on a fresh rayon pool of `threads` workers.
fn on_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(f),
        Err(e) => panic!("rayon pool of {threads}: {e}"),
    }
}

/// Seeded activations with exact zeros and values on both sides of 1e-3.
fn activations(len: usize, seed: u64) -> Vec<f32> {
    let mut st = seed;
    (0..len)
        .map(|i| {
            st = st
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (st >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            match i % 7 {
                0 => 0.0,
                1 => u * 1e-3,
                _ => u * (1.0 + (i % 5) as f32),
            }
        })
        .collect()
}

/// Every output of the statistics as bits.
fn bits(st: &NeuronStats) -> Vec<Vec<u64>> {
    let b = |r: Result<Array1<f64>>| match r {
        Ok(a) => a.iter().map(|x| x.to_bits()).collect(),
        Err(e) => panic!("{e}"),
    };
    vec![
        vec![st.sample_count(), st.token_count()],
        b(st.mean()),
        b(st.variance()),
        b(st.mean_abs()),
        b(st.max_abs()),
        b(st.zero_fraction()),
        b(st.below_threshold_fraction()),
    ]
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{x} vs {y}");
    }
}

fn params(n: usize, aggregation: Aggregation) -> NeuronStats {
    match NeuronStatsParams::new(n)
        .aggregation(aggregation)
        .magnitude_threshold(1e-3)
        .build()
    {
        Ok(st) => st,
        Err(e) => panic!("{e}"),
    }
}

/// Outputs go to the sink in item order for any worker count and wave boundary, each
/// worker's scratch is reused and returned, and the first error in item order stops the
/// run with nothing after it sunk.
#[test]
fn ordered_waves_keep_item_order_and_stop_at_the_first_error() {
    let items: Vec<usize> = (0..50).collect();
    for threads in [1, 2, 3] {
        for fail in [None, Some(37), Some(3)] {
            let made = std::sync::atomic::AtomicUsize::new(0);
            let mut sunk = Vec::new();
            let r = on_pool(threads, || {
                ordered_waves(
                    &items,
                    || usize::MAX,
                    || {
                        made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        0usize
                    },
                    |uses, &i, out| {
                        *uses += 1;
                        *out = i * 10;
                        if fail == Some(i) || fail.is_some_and(|f| i == f + 4) {
                            return Err(MetricsError::Empty {
                                what: format!("item {i}"),
                            });
                        }
                        Ok(())
                    },
                    |&o| sunk.push(o),
                )
            });
            let want: Vec<usize> = (0..fail.unwrap_or(50)).map(|i| i * 10).collect();
            assert_eq!(sunk, want, "threads {threads}, fail {fail:?}");
            match (fail, r) {
                (None, Ok(scratches)) => {
                    // Every item ran with one of the returned scratches.
                    assert!(scratches.len() <= threads);
                    assert_eq!(scratches.iter().sum::<usize>(), items.len());
                }
                (Some(f), Err(MetricsError::Empty { what })) => {
                    assert_eq!(what, format!("item {f}"))
                }
                (f, r) => panic!("threads {threads}, fail {f:?}: {r:?}"),
            }
            assert!(made.into_inner() <= threads, "one scratch per worker");
        }
    }
}

/// Many row chunks (several waves, reused outputs and scratch): the result does not depend
/// on the worker count (bit for bit), matches one chunk to 1e-12 with exact counters, and
/// a NaN in a late chunk gives its position and leaves the statistics unchanged.
#[test]
fn chunked_update_over_many_waves_is_exact_and_thread_independent() {
    let (rows, n) = (300, 37);
    let data = activations(rows * n, 7);
    let Ok(x) = ArrayView2::from_shape((rows, n), &data) else {
        panic!("shape")
    };
    let run = |threads, chunk_rows| {
        on_pool(threads, || {
            let mut st = params(n, Aggregation::PerToken);
            match st.update_chunked(x, chunk_rows) {
                Ok(()) => st,
                Err(e) => panic!("{e}"),
            }
        })
    };
    let one = run(1, 7);
    assert!(
        one.histogram()
            .is_some_and(|h| h.total() == (rows * n) as u64)
    );
    for threads in [2, 3] {
        let other = run(threads, 7);
        assert_eq!(bits(&other), bits(&one), "threads {threads}");
        assert_eq!(other.histogram(), one.histogram(), "threads {threads}");
    }
    let whole = run(1, rows);
    assert_eq!(whole.histogram(), one.histogram());
    assert_eq!(bits(&one)[0], bits(&whole)[0]);
    let f = |v: &[u64]| v.iter().map(|x| f64::from_bits(*x)).collect::<Vec<_>>();
    for (a, b) in bits(&one).iter().zip(bits(&whole)).skip(1) {
        close(&f(a), &f(&b), 1e-12);
    }
    assert_eq!(
        bits(&one)[4..7],
        bits(&whole)[4..7],
        "max and fractions exact"
    );

    let mut bad = data.clone();
    bad[250 * n + 5] = f32::NAN;
    let Ok(xb) = ArrayView2::from_shape((rows, n), &bad) else {
        panic!("shape")
    };
    for threads in [1, 2] {
        let mut st = run(1, 7);
        let before = bits(&st);
        let r = on_pool(threads, || st.update_chunked(xb, 7));
        match r {
            Err(MetricsError::NonFinite { position, .. }) => {
                assert_eq!(position, vec![250, 5])
            }
            other => panic!("threads {threads}: {other:?}"),
        }
        assert_eq!(bits(&st), before, "unchanged after the error");
        assert!(
            st.histogram()
                .is_some_and(|h| h.total() == (rows * n) as u64)
        );
    }
}

/// The per-sequence-mean path over many groups: thread-independent bit for bit, and the
/// variance of the sequence means (to 1e-12 against one group).
#[test]
fn sequence_means_over_many_waves_are_exact_and_thread_independent() {
    let (b, seq, n) = (40, 6, 13);
    let data = activations(b * seq * n, 11);
    let Ok(x) = ArrayView3::from_shape((b, seq, n), &data) else {
        panic!("shape")
    };
    let run = |threads, group| {
        on_pool(threads, || {
            let mut st = params(n, Aggregation::PerSequenceMean);
            match st.update_sequence_means(x, group) {
                Ok(()) => st,
                Err(e) => panic!("{e}"),
            }
        })
    };
    let one = run(1, 1);
    for threads in [2, 3] {
        let other = run(threads, 1);
        assert_eq!(bits(&other), bits(&one), "threads {threads}");
        assert_eq!(other.histogram(), one.histogram(), "threads {threads}");
    }
    assert_eq!(run(1, b).histogram(), one.histogram());
    assert!(
        one.histogram()
            .is_some_and(|h| h.total() == (b * seq * n) as u64)
    );
    assert_eq!(one.sample_count(), 40);
    assert_eq!(one.token_count(), 240);
    let means = x.mapv(f64::from).mean_axis(Axis(1));
    let Some(means) = means else { panic!("means") };
    let (Ok(v), Ok(w)) = (one.variance(), run(1, b).variance()) else {
        panic!("variance")
    };
    let want = means.var_axis(Axis(0), 0.0);
    close(
        v.as_slice().unwrap_or(&[]),
        want.as_slice().unwrap_or(&[]),
        1e-12,
    );
    close(
        v.as_slice().unwrap_or(&[]),
        w.as_slice().unwrap_or(&[]),
        1e-12,
    );
}

/// The 16-bit tile counters are folded before they overflow: one chunk of more than 2¹⁶
/// rows (n = 9: one tile and one remainder neuron) where every counter exceeds 65 535.
#[test]
fn counters_fold_before_sixteen_bits_overflow() {
    let (rows, n) = (140_000usize, 9usize);
    assert!((CHUNK_ELEMS / n) >= rows, "one chunk");
    let data: Vec<f32> = (0..rows * n)
        .map(|i| match (i % n, i / n % 4) {
            (0 | 8, _) => 0.0,
            (1, _) => 1e-4,
            (_, 0) => 0.0,
            (j, _) => j as f32,
        })
        .collect();
    let Ok(x) = ArrayView2::from_shape((rows, n), &data) else {
        panic!("shape")
    };
    let mut st = params(n, Aggregation::PerToken);
    if let Err(e) = st.update(x) {
        panic!("{e}")
    }
    let (Ok(z), Ok(b)) = (st.zero_fraction(), st.below_threshold_fraction()) else {
        panic!("fractions")
    };
    for j in 0..n {
        let col = (0..rows).map(|r| data[r * n + j]);
        let zeros = col.clone().filter(|v| *v == 0.0).count();
        let below = col.filter(|v| v.abs() < 1e-3).count();
        assert_eq!(z[j], zeros as f64 / rows as f64, "zeros, neuron {j}");
        assert_eq!(b[j], below as f64 / rows as f64, "below, neuron {j}");
    }
    assert_eq!(z[0], 1.0);
    assert_eq!(b[1], 1.0);
}
