//! # sparsity-fuzz
//!
//! Test support for the loaders' fuzz tests (issue #23), not published: one seeded mutation
//! generator for bytes and JSON documents, a global allocator that records the largest single
//! request, and [`campaign`], the loop every fuzz test runs: generate a mutated input, run the
//! loader on it under `catch_unwind`, and fail the test on a panic or on an allocation larger
//! than the bound the test states for that input. A failure names the case number, the seed and
//! the mutation kind, so it reproduces.
//!
//! A test binary installs the allocator once:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: sparsity_fuzz::LargestRequest = sparsity_fuzz::LargestRequest;
//! ```
//!
//! Without it, [`largest_request`] stays 0 and the allocation bound is not checked (the
//! panic check still is).
#![allow(unsafe_code)] // the counting allocator
#![allow(clippy::panic)] // a test-support crate: failing the test is its job

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::{Rng, SeedableRng};
pub use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// Forwards to the system allocator and records the largest single request.
#[derive(Debug)]
pub struct LargestRequest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is the system allocator's; the only addition is an atomic max.
unsafe impl GlobalAlloc for LargestRequest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract for `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Resets the largest-request record.
pub fn reset_largest() {
    LARGEST.store(0, Ordering::Relaxed);
}

/// The largest single allocation since the last [`reset_largest`] (0 without the allocator).
pub fn largest_request() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

/// The allocation record is process-wide: campaigns (and tests that measure a baseline) run
/// one at a time through this lock.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `var` parsed from the environment, else `default` (case counts and seeds of a campaign).
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Integer values every numeric field is set to: 0, −1, 2^31, 2^63, 10^12, and small numbers.
pub const ABSURD_INTS: [i128; 8] = [0, -1, 1 << 31, 1 << 63, 1_000_000_000_000, 1, 3, 7];

/// One byte-level mutation of `input` and its kind: truncation, bit flips, random bytes
/// rewritten, trailing garbage, a chunk deleted, a chunk duplicated, a 4- or 8-byte window set
/// to an extreme little-endian integer.
pub fn mutate_bytes(rng: &mut ChaCha8Rng, input: &[u8]) -> (Vec<u8>, &'static str) {
    let mut w = input.to_vec();
    if w.is_empty() {
        return (vec![rng.random()], "grow empty");
    }
    let kind = match rng.random_range(0..7) {
        0 => {
            w.truncate(rng.random_range(0..w.len()));
            "truncate"
        }
        1 => {
            for _ in 0..rng.random_range(1..9) {
                let i = rng.random_range(0..w.len());
                w[i] ^= 1 << rng.random_range(0..8);
            }
            "flip bits"
        }
        2 => {
            for _ in 0..rng.random_range(1..5) {
                let i = rng.random_range(0..w.len());
                w[i] = rng.random();
            }
            "rewrite bytes"
        }
        3 => {
            let extra = rng.random_range(1..256);
            w.extend((0..extra).map(|_| rng.random::<u8>()));
            "trailing bytes"
        }
        4 => {
            let a = rng.random_range(0..w.len());
            let b = (a + rng.random_range(1..64)).min(w.len());
            w.drain(a..b);
            "delete chunk"
        }
        5 => {
            let a = rng.random_range(0..w.len());
            let b = (a + rng.random_range(1..64)).min(w.len());
            let chunk = w[a..b].to_vec();
            w.splice(a..a, chunk);
            "duplicate chunk"
        }
        _ => {
            let width = if rng.random_bool(0.5) { 4 } else { 8 };
            if w.len() < width {
                w.clear();
            } else {
                let i = rng.random_range(0..=w.len() - width);
                let v: u64 = [u64::MAX, 1 << 31, 1 << 40, 1 << 63, 0][rng.random_range(0..5)];
                w[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            "extreme integer"
        }
    };
    (w, kind)
}

/// Every path (object keys and array indices) of a JSON document, the root excluded, with
/// whether the value there is a number (`Some(true)`), a string (`Some(false)`) or neither.
fn paths(v: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<(Vec<PathStep>, Option<bool>)>) {
    let visit = |step: PathStep, c: &Value, prefix: &mut Vec<PathStep>, out: &mut Vec<_>| {
        prefix.push(step);
        let leaf = match c {
            Value::Number(_) => Some(true),
            Value::String(_) => Some(false),
            _ => None,
        };
        out.push((prefix.clone(), leaf));
        paths(c, prefix, out);
        prefix.pop();
    };
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                visit(PathStep::Key(k.clone()), c, prefix, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                visit(PathStep::Index(i), c, prefix, out);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at<'a>(v: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            PathStep::Key(k) => cur.get_mut(k.as_str())?,
            PathStep::Index(i) => cur.get_mut(*i)?,
        };
    }
    Some(cur)
}

/// One structural mutation of a JSON document and its kind: a number anywhere set to one of
/// [`ABSURD_INTS`] (or a huge / negative float), a string anywhere set to junk (NUL, U+FFFD,
/// 4 KiB long), any value replaced by another type, an object field or array element removed,
/// an array emptied. Documents without any value inside are returned unchanged.
pub fn mutate_json(rng: &mut ChaCha8Rng, doc: &Value) -> (Value, &'static str) {
    let mut v = doc.clone();
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    if all.is_empty() {
        return (v, "unchanged");
    }
    let numbers: Vec<&Vec<PathStep>> = all
        .iter()
        .filter(|p| p.1 == Some(true))
        .map(|p| &p.0)
        .collect();
    let strings: Vec<&Vec<PathStep>> = all
        .iter()
        .filter(|p| p.1 == Some(false))
        .map(|p| &p.0)
        .collect();
    let pick = |rng: &mut ChaCha8Rng, list: &[&Vec<PathStep>]| -> Option<Vec<PathStep>> {
        (!list.is_empty()).then(|| list[rng.random_range(0..list.len())].clone())
    };
    let kind = rng.random_range(0..5);
    let (path, kind) = match kind {
        0 => (pick(rng, &numbers), 0),
        1 => (pick(rng, &strings), 1),
        k => (Some(all[rng.random_range(0..all.len())].0.clone()), k),
    };
    let Some(path) = path else {
        return (v, "unchanged");
    };
    let name = match kind {
        0 => {
            if let Some(x) = at(&mut v, &path) {
                *x = if rng.random_bool(0.8) {
                    let n = ABSURD_INTS[rng.random_range(0..ABSURD_INTS.len())];
                    serde_json::from_str(&n.to_string()).unwrap_or(Value::Null)
                } else {
                    serde_json::json!([-1.5e300, 1e300, -0.0][rng.random_range(0..3)])
                };
            }
            "number"
        }
        1 => {
            if let Some(x) = at(&mut v, &path) {
                *x = match rng.random_range(0..3) {
                    0 => Value::String("junk\u{0}\u{fffd}".into()),
                    1 => Value::String(String::new()),
                    _ => Value::String("x".repeat(4096)),
                };
            }
            "string"
        }
        2 => {
            if let Some(x) = at(&mut v, &path) {
                *x = match rng.random_range(0..4) {
                    0 => Value::Null,
                    1 => serde_json::json!([1, 2]),
                    2 => serde_json::json!({"x": -1}),
                    _ => serde_json::json!(true),
                };
            }
            "type"
        }
        3 => {
            let (last, parent) = path
                .split_last()
                .map_or((None, &[][..]), |(l, p)| (Some(l), p));
            if let (Some(last), Some(p)) = (last, at(&mut v, parent)) {
                match (last, p) {
                    (PathStep::Key(k), Value::Object(m)) => {
                        m.remove(k);
                    }
                    (PathStep::Index(i), Value::Array(a)) if *i < a.len() => {
                        a.remove(*i);
                    }
                    _ => {}
                }
            }
            "remove"
        }
        _ => {
            if let Some(x) = at(&mut v, &path) {
                match x {
                    Value::Array(a) => a.clear(),
                    Value::Object(m) => m.clear(),
                    other => *other = Value::Array(Vec::new()),
                }
            }
            "empty"
        }
    };
    (v, name)
}

/// What a campaign saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Cases the loader accepted.
    pub accepted: usize,
    /// Cases rejected with a typed error.
    pub rejected: usize,
    /// Cases per mutation kind.
    pub kinds: BTreeMap<&'static str, usize>,
    /// The largest single allocation of any case.
    pub largest: usize,
}

/// Runs `cases` seeded cases: `generate` makes a mutated input and names its mutation,
/// `bound` gives the largest single allocation allowed for it, and `load` runs the loader.
/// Fails the test (with the case number, seed and kind) on a panic or an allocation beyond
/// the bound; an `Err` must have a non-empty message. Prints and returns the counts.
pub fn campaign<I, T, E: std::fmt::Display>(
    label: &str,
    cases: usize,
    seed: u64,
    mut generate: impl FnMut(&mut ChaCha8Rng) -> (I, &'static str),
    bound: impl Fn(&I) -> usize,
    mut load: impl FnMut(I) -> Result<T, E>,
) -> Outcome {
    let _serial = serial();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Outcome::default();
    for case in 0..cases {
        let (input, kind) = generate(&mut rng);
        *out.kinds.entry(kind).or_default() += 1;
        let limit = bound(&input);
        reset_largest();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| load(input)));
        let largest = largest_request();
        out.largest = out.largest.max(largest);
        match result {
            Ok(Ok(_)) => out.accepted += 1,
            Ok(Err(e)) => {
                if e.to_string().is_empty() {
                    panic!("{label} case {case} (seed {seed}, {kind}): an error without a message");
                }
                out.rejected += 1;
            }
            Err(_) => panic!("{label} case {case} (seed {seed}, {kind}) panicked"),
        }
        if largest > limit {
            panic!(
                "{label} case {case} (seed {seed}, {kind}): an allocation of {largest} B \
                 (bound {limit} B)"
            );
        }
    }
    eprintln!(
        "{label}: {cases} cases (seed {seed}): {} accepted, {} typed errors; largest allocation \
         {} B; by kind: {:?}",
        out.accepted, out.rejected, out.largest, out.kinds
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_change_the_input() {
        let doc = serde_json::json!({"a": 1, "b": ["x", {"c": 2.5}], "d": "s"});
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| {
                    (
                        mutate_json(&mut rng, &doc).0,
                        mutate_bytes(&mut rng, &bytes).0,
                    )
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = (run(5), run(5));
        assert_eq!(a, b);
        let changed = a.iter().filter(|(j, w)| *j != doc && *w != bytes).count();
        assert!(changed > 150, "only {changed} of 200 pairs changed both");
    }

    #[test]
    fn a_campaign_counts_and_catches_nothing_on_a_total_loader() {
        let out = campaign(
            "parse",
            300,
            1,
            |rng| mutate_bytes(rng, b"{\"n\": 12}"),
            |w| 64 * w.len() + 4096,
            |w| serde_json::from_slice::<Value>(&w),
        );
        assert_eq!(out.accepted + out.rejected, 300);
        assert!(out.rejected > 0);
    }
}
