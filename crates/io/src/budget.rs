//! Memory budgets for work sized by its arguments (issue #23): a command estimates its peak
//! memory before it allocates anything, from the sizes it was given, and refuses with a typed
//! error stating the estimate when it exceeds the budget: the user's `--max-memory`, or else
//! the memory the system reports available (`MemAvailable` of `/proc/meminfo`).
//!
//! Estimates are computed in `f64`, so absurd arguments (a length of 4·10^9) cannot overflow
//! them; each is a sum of named parts, so a refusal (or a `--dry-run`) shows where the memory
//! goes.

/// `MemAvailable` of `/proc/meminfo` in bytes, where the system has it.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// `bytes` as B, KiB, MiB, GiB, TiB, PiB or EiB with 3 decimals (scientific beyond).
pub fn human_bytes(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u + 1 == units.len() && v >= 1024.0 {
        return format!("{bytes:.3e} B");
    }
    format!("{v:.3} {}", units[u])
}

/// Parses a byte count with an optional K, M, G or T suffix (powers of 1024), e.g. `8G`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}`: expected bytes, e.g. 8G or 512M"))
}

/// A peak-memory estimate: named parts in bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryEstimate {
    /// What the estimate is for, e.g. `cluster of model.layers.1.mlp.down_proj.weight`.
    pub what: String,
    /// Named parts (bytes), summed by [`Self::total`].
    pub parts: Vec<(String, f64)>,
}

/// The estimate is larger than the budget.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{what} needs an estimated {} ({parts}), more than the {} of {budget_source}; {advice}",
    human_bytes(*estimate),
    human_bytes(*limit)
)]
pub struct OverBudget {
    /// What was estimated.
    pub what: String,
    /// The estimate in bytes.
    pub estimate: f64,
    /// The budget in bytes.
    pub limit: f64,
    /// Where the budget came from (`--max-memory`, or available memory).
    pub budget_source: &'static str,
    /// The parts, as text.
    pub parts: String,
    /// How to make the work fit.
    pub advice: String,
}

impl MemoryEstimate {
    /// An empty estimate for `what`.
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            parts: Vec::new(),
        }
    }

    /// Adds a part of `bytes` bytes.
    pub fn part(mut self, name: impl Into<String>, bytes: f64) -> Self {
        self.parts.push((name.into(), bytes.max(0.0)));
        self
    }

    /// The sum of the parts, in bytes.
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }

    /// The parts as `name X, name Y`.
    pub fn parts_text(&self) -> String {
        self.parts
            .iter()
            .map(|(n, b)| format!("{n} {}", human_bytes(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks the total against `budget` bytes, or without one against the memory the system
    /// reports available (no check where it reports none). Returns the total; the error states
    /// the estimate, its parts, the budget and `advice`.
    pub fn check(&self, budget: Option<u64>, advice: &str) -> Result<f64, OverBudget> {
        let total = self.total();
        let (limit, source) = match budget {
            Some(b) => (b as f64, "--max-memory"),
            None => match available_memory_bytes() {
                Some(a) => (a as f64, "available memory (/proc/meminfo)"),
                None => return Ok(total),
            },
        };
        if total > limit || total.is_nan() {
            return Err(OverBudget {
                what: self.what.clone(),
                estimate: total,
                limit,
                budget_source: source,
                parts: self.parts_text(),
                advice: advice.to_string(),
            });
        }
        Ok(total)
    }
}

impl std::fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: estimated peak memory {}",
            self.what,
            human_bytes(self.total())
        )?;
        for (n, b) in &self.parts {
            writeln!(f, "  {n}: {}", human_bytes(*b))?;
        }
        match available_memory_bytes() {
            Some(a) => write!(f, "  (available now: {})", human_bytes(a as f64)),
            None => write!(f, "  (available memory unknown on this system)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_estimate_over_budget_names_its_parts_and_the_budget() {
        let e = MemoryEstimate::new("cluster of w")
            .part("distances", 3.0 * 1024.0 * 1024.0)
            .part("bits", 1024.0);
        assert_eq!(e.total(), 3.0 * 1024.0 * 1024.0 + 1024.0);
        assert!(e.check(Some(4 << 20), "fewer").is_ok());
        let err = e.check(Some(1 << 20), "use fewer --neighbors").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cluster of w needs an estimated 3.001 MiB"),
            "{msg}"
        );
        assert!(msg.contains("distances 3.000 MiB") && msg.contains("1.000 MiB of --max-memory"));
        assert!(msg.contains("use fewer --neighbors"));
        // absurd sizes stay finite in f64 and are refused
        let huge = MemoryEstimate::new("x").part("scores", 4e9 * 4e9 * 4.0);
        assert!(huge.check(Some(u64::MAX), "").is_err());
        assert_eq!(human_bytes(1536.0), "1.500 KiB");
    }
}
