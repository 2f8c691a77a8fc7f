//! The machine a measurement ran on: CPU model, logical cores, load average. One place for the
//! benchmark commands (`decode-bench`, `sparse-decode`) and the benchmark harness
//! (`benches/harness.rs`), which record these next to every timed row.

/// `model name` of /proc/cpuinfo ("unknown" where there is none).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Logical cores available to this process (1 when unknown).
pub fn logical_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The CPU model and its logical core count, as the benchmark reports print it.
pub fn cpu_name() -> String {
    format!("{}, {} logical cores", cpu_model(), logical_cores())
}

/// The 1-minute load average (/proc/loadavg), `None` where the system has none.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
}

/// The rule every benchmark table applies: a measurement taken while the 1-minute load average
/// exceeded the logical core count shared the machine with other work and is unreliable.
pub fn load_exceeds_cores(load: f64, cores: usize) -> bool {
    load > cores as f64
}

/// The higher of two optional load readings (either one where the other is missing).
pub fn max_load(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Runs `f` between two readings of the load average; returns its result and the higher reading.
pub fn with_load<T>(f: impl FnOnce() -> T) -> (T, Option<f64>) {
    let before = load_average();
    let out = f();
    (out, max_load(before, load_average()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_facts_are_plausible() {
        assert!(logical_cores() >= 1);
        assert!(cpu_name().ends_with(&format!("{} logical cores", logical_cores())));
        if cfg!(target_os = "linux") {
            let load = load_average();
            assert!(load.is_some_and(|l| l >= 0.0), "{load:?}");
        }
        assert!(load_exceeds_cores(2.01, 2));
        assert!(!load_exceeds_cores(2.0, 2));
        assert_eq!(max_load(Some(1.0), Some(3.0)), Some(3.0));
        assert_eq!(max_load(None, Some(3.0)), Some(3.0));
        assert_eq!(max_load(None, None), None);
        let (v, load) = with_load(|| 7);
        assert_eq!(v, 7);
        assert_eq!(load.is_some(), load_average().is_some());
    }
}
