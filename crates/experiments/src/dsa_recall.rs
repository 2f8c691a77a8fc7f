//! Key–value recall built into the DSA sweep's token stream: a task where the choice of keys
//! matters, with known answer positions.
//!
//! Every window of `L` tokens is corpus text with `pairs` key–value facts planted in its first
//! quarter and the same keys queried, in another order, in its last quarter:
//!
//! - a **fact** is one token `F(k, v)` (key k of `keys`, value v of `values`; `keys · values`
//!   dedicated ids), at a random position `s < L/4`;
//! - a **query** is the token `Q(k)` at a position `q ≥ L − L/4`, followed by `V(v)`: the next-token
//!   target at `q` is the fact's value, which only the fact at `s` (at least `L/2` positions back)
//!   tells. Keys are distinct within a window and values are drawn anew per window, so nothing can
//!   be memorised across windows.
//!
//! A fact is one token rather than the sequence `k v` so that one attention step from `q` to `s`
//! answers the query (content match of `Q(k)` with `F(k, ·)`); the three-token form would need an
//! induction circuit across the two layers of the tiny preset, which the CPU budget cannot be relied
//! on to train. The **indexer's recall** is then well defined: the fraction of queries `q` whose
//! top-k selection contains `s`.
//!
//! Facts and queries replace text tokens; the text around them runs on from window to window.
//! Windows are aligned to multiples of `L` as the trainer and the evaluator read them.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use sparsity_models::error::{ModelError, Result};

/// The recall task's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallTask {
    /// Facts (and queries) per window.
    pub pairs: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Distinct values.
    pub values: usize,
}

impl Default for RecallTask {
    fn default() -> Self {
        Self {
            pairs: 4,
            keys: 8,
            values: 16,
        }
    }
}

impl RecallTask {
    /// Token ids the task adds after a text vocabulary: facts, queries, values.
    pub fn extra_tokens(&self) -> usize {
        self.keys * self.values + self.keys + self.values
    }

    /// The fact token `F(key, value)` after a text vocabulary of `base` ids.
    pub fn fact(&self, base: usize, key: usize, value: usize) -> u32 {
        (base + key * self.values + value) as u32
    }

    /// The query token `Q(key)`.
    pub fn query(&self, base: usize, key: usize) -> u32 {
        (base + self.keys * self.values + key) as u32
    }

    /// The value token `V(value)`.
    pub fn value(&self, base: usize, value: usize) -> u32 {
        (base + self.keys * self.values + self.keys + value) as u32
    }

    /// Checks the sizes against a window length: `pairs` facts fit in the first quarter and
    /// `pairs` query–value slots (two positions each) in the last quarter.
    pub fn validate(&self, len: usize) -> Result<()> {
        if self.pairs == 0 || self.keys < self.pairs || self.values < 2 {
            return Err(ModelError::Invalid(format!(
                "recall task: {} pairs, {} keys, {} values (need pairs ≥ 1, keys ≥ pairs, values ≥ 2)",
                self.pairs, self.keys, self.values
            )));
        }
        let quarter = len / 4;
        if quarter / 2 < self.pairs {
            return Err(ModelError::Invalid(format!(
                "recall task: {} pairs do not fit in windows of {len} tokens (facts in the first \
                 {quarter} positions, queries in two-position slots of the last {quarter}); use \
                 longer windows or fewer --recall-pairs",
                self.pairs
            )));
        }
        Ok(())
    }
}

/// One query with its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecallQuery {
    /// Window index (the window starts at `window · L`).
    pub window: usize,
    /// Position of `Q(k)` in the window; the target at this position is `value`.
    pub position: usize,
    /// Position of the fact `F(k, v)` in the window.
    pub source: usize,
    /// The value token to predict.
    pub value: u32,
}

/// A token stream with the task planted and its queries.
#[derive(Clone, Debug, PartialEq)]
pub struct RecallStream {
    /// Windows of `L` tokens, then one more token (the last window's last target).
    pub ids: Vec<u32>,
    /// Every query, by window.
    pub queries: Vec<RecallQuery>,
}

/// Plants the task into `text` (ids below `base`) in windows of `len`, as many windows as the
/// text fills; seeded.
pub fn build_recall_stream(
    text: &[u32],
    len: usize,
    task: &RecallTask,
    base: usize,
    seed: u64,
) -> Result<RecallStream> {
    task.validate(len)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let quarter = len / 4;
    let query_start = len - quarter;
    let slots = quarter / 2;
    let free = len - 3 * task.pairs;
    let mut ids = Vec::with_capacity(text.len() + text.len() / 4);
    let mut queries = Vec::new();
    let mut cursor = 0usize;
    let mut window = 0usize;
    while cursor + free < text.len() {
        let mut w: Vec<Option<u32>> = vec![None; len];
        let mut sources: Vec<usize> = rand::seq::index::sample(&mut rng, quarter, task.pairs)
            .into_iter()
            .collect();
        sources.sort_unstable();
        let mut positions: Vec<usize> = rand::seq::index::sample(&mut rng, slots, task.pairs)
            .into_iter()
            .map(|i| query_start + 2 * i)
            .collect();
        positions.sort_unstable();
        let keys: Vec<usize> = rand::seq::index::sample(&mut rng, task.keys, task.pairs)
            .into_iter()
            .collect();
        let values: Vec<usize> = (0..task.pairs)
            .map(|_| rng.random_range(0..task.values))
            .collect();
        // queries ask the facts in a random order
        let mut order: Vec<usize> = (0..task.pairs).collect();
        order.shuffle(&mut rng);
        for (i, &s) in sources.iter().enumerate() {
            w[s] = Some(task.fact(base, keys[i], values[i]));
        }
        for (&q, &i) in positions.iter().zip(&order) {
            w[q] = Some(task.query(base, keys[i]));
            w[q + 1] = Some(task.value(base, values[i]));
            queries.push(RecallQuery {
                window,
                position: q,
                source: sources[i],
                value: task.value(base, values[i]),
            });
        }
        for slot in w {
            ids.push(slot.unwrap_or_else(|| {
                let t = text[cursor];
                cursor += 1;
                t
            }));
        }
        window += 1;
    }
    if window == 0 {
        return Err(ModelError::Invalid(format!(
            "recall task: a text stream of {} tokens fills no window of {len}",
            text.len()
        )));
    }
    ids.push(text[cursor.min(text.len() - 1)]);
    Ok(RecallStream { ids, queries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_answers_its_fact_at_known_positions() {
        let task = RecallTask::default();
        let base = 100;
        let text: Vec<u32> = (0..5000u32).map(|i| i % 97).collect();
        let len = 64;
        let s = build_recall_stream(&text, len, &task, base, 7).unwrap();
        let windows = (s.ids.len() - 1) / len;
        assert_eq!(s.queries.len(), windows * task.pairs);
        assert!(
            s.ids
                .iter()
                .all(|&t| (t as usize) < base + task.extra_tokens())
        );
        let facts = base..base + task.keys * task.values;
        for q in &s.queries {
            let w = &s.ids[q.window * len..q.window * len + len + 1];
            assert!(q.source < len / 4 && q.position >= len - len / 4);
            // the fact F(k, v), the query Q(k) and the target V(v) agree
            let fact = w[q.source] as usize - base;
            let (k, v) = (fact / task.values, fact % task.values);
            assert_eq!(w[q.position], task.query(base, k));
            assert_eq!(w[q.position + 1], task.value(base, v));
            assert_eq!(q.value, task.value(base, v));
            assert!(facts.contains(&(w[q.source] as usize)));
        }
        // keys are distinct within a window, each queried once
        for win in 0..windows {
            let mut keys: Vec<u32> = s
                .queries
                .iter()
                .filter(|q| q.window == win)
                .map(|q| s.ids[win * len + q.position])
                .collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(keys.len(), task.pairs);
        }
        // the text runs on in order around the planted tokens
        let rest: Vec<u32> = s
            .ids
            .iter()
            .copied()
            .filter(|&t| (t as usize) < base)
            .collect();
        assert_eq!(&rest[..], &text[..rest.len()]);
        // seeded
        assert_eq!(build_recall_stream(&text, len, &task, base, 7).unwrap(), s);
        assert_ne!(build_recall_stream(&text, len, &task, base, 8).unwrap(), s);
    }

    #[test]
    fn windows_too_short_for_the_task_are_refused() {
        let task = RecallTask::default();
        let err = build_recall_stream(&[1; 1000], 16, &task, 10, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not fit in windows of 16"), "{err}");
        assert!(task.validate(32).is_ok());
        let bad = RecallTask { keys: 2, ..task };
        assert!(bad.validate(64).is_err());
        assert!(build_recall_stream(&[1; 10], 64, &task, 10, 0).is_err());
    }
}
