//! Row chunks on rayon: waves of chunks whose outputs reach the caller in chunk order (so the
//! results do not depend on the thread count), and the merge of partial moments.

use rayon::prelude::*;

use super::kernel::chan_step;
use crate::error::Result;

/// Items per worker in one wave of [`ordered_waves`].
const WAVE_PER_WORKER: usize = 8;

/// Runs `work(scratch, item, out)` over `items` on rayon's current pool and hands every
/// output to `sink` in item order, stopping at the first error (in item order; nothing after
/// it reaches `sink`).
///
/// The items run in waves of [`WAVE_PER_WORKER`] per worker. The outputs of a wave are reused
/// by the next (`work` must overwrite its `out` completely) and every worker keeps one
/// scratch for all its items, so a long batch allocates a wave's outputs and one scratch per
/// worker instead of both per item (fresh allocations fault their pages in again, which cost
/// about a fifth of the streaming time). Which worker runs which item never changes an output.
/// On success the scratches are returned (for what they accumulate across items whatever the
/// order, such as exact counts).
pub(super) fn ordered_waves<I, O, S>(
    items: &[I],
    new_out: impl Fn() -> O,
    new_scratch: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, &I, &mut O) -> Result<()> + Sync,
    mut sink: impl FnMut(&O),
) -> Result<Vec<S>>
where
    I: Sync,
    O: Send,
    S: Send,
{
    let workers = rayon::current_num_threads().max(1);
    let wave = (workers * WAVE_PER_WORKER).min(items.len());
    let scratch: Vec<std::sync::Mutex<Option<S>>> =
        (0..workers).map(|_| std::sync::Mutex::new(None)).collect();
    let mut outs: Vec<O> = (0..wave).map(|_| new_out()).collect();
    for group in items.chunks(wave.max(1)) {
        let results: Vec<Result<()>> = outs[..group.len()]
            .par_iter_mut()
            .zip(group)
            .map(|(out, item)| {
                let slot = rayon::current_thread_index().unwrap_or(0) % workers;
                // A poisoned slot only means a panic elsewhere; its scratch is still valid.
                let mut guard = scratch[slot]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let sc = guard.get_or_insert_with(&new_scratch);
                work(sc, item, out)
            })
            .collect();
        for (out, r) in outs.iter().zip(results) {
            r?;
            sink(out);
        }
    }
    Ok(scratch
        .into_iter()
        .filter_map(|m| {
            m.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        })
        .collect())
}

/// Chan et al. merge of (n_b, mean_b, m2_b) into (n_a, mean_a, m2_a).
pub(super) fn merge_moments(
    n_a: u64,
    mean_a: &mut [f64],
    m2_a: &mut [f64],
    n_b: u64,
    mean_b: &[f64],
    m2_b: &[f64],
) {
    if n_b == 0 {
        return;
    }
    if n_a == 0 {
        mean_a.copy_from_slice(mean_b);
        m2_a.copy_from_slice(m2_b);
        return;
    }
    let n = (n_a + n_b) as f64;
    let fb = n_b as f64 / n;
    let w = n_a as f64 * n_b as f64 / n;
    for ((ma, qa), (&mb, &qb)) in mean_a
        .iter_mut()
        .zip(m2_a.iter_mut())
        .zip(mean_b.iter().zip(m2_b))
    {
        chan_step(ma, qa, mb, qb, fb, w);
    }
}
