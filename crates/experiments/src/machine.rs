//! The machine a measurement ran on: CPU model, logical cores, load average, and the CPU time
//! other processes took while it ran. One place for the benchmark commands (`decode-bench`,
//! `sparse-decode`) and the benchmark harness (`benches/harness.rs`), which record these next to
//! every timed row.
//!
//! Why two measures of a busy machine: the 1-minute load average counts the benchmark's own
//! threads. A decoder on every core reads about `cores + 0.2` by itself (rayon's idle workers
//! yield-spin while the calling thread runs attention), so "load above the core count" flags runs
//! nothing else disturbed. [`CpuSnapshot`] measures the disturbance directly: the CPU time of every
//! other process plus the time the hypervisor stole (`/proc/stat`), less this process's and its
//! waited-for children's (`/proc/self/stat`), over the run's wall time.

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

/// Busy and total CPU ticks of the whole machine and of this process (with its finished
/// children) at one instant (Linux; `None` elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSnapshot {
    /// user + nice + system + irq + softirq + steal, all CPUs.
    busy: u64,
    /// Every field of the `cpu` line (busy + idle + iowait), all CPUs.
    total: u64,
    /// utime + stime + cutime + cstime of this process.
    own: u64,
    /// CPUs counted in `/proc/stat`.
    cpus: usize,
}

impl CpuSnapshot {
    /// Reads `/proc/stat` and `/proc/self/stat`.
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        Self::parse(&stat, &own)
    }

    fn parse(stat: &str, self_stat: &str) -> Option<Self> {
        let cpu: Vec<u64> = stat
            .lines()
            .find(|l| l.starts_with("cpu "))?
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice: inside user/nice]
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
        let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
        let total = (0..8).map(field).sum();
        let cpus = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count()
            .max(1);
        // fields after the command name (which may hold spaces): state is field 3, utime 14
        let rest = &self_stat[self_stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let tick = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let own = tick(14)? + tick(15)? + tick(16)? + tick(17)?;
        Some(Self {
            busy,
            total,
            own,
            cpus,
        })
    }

    /// Average number of CPUs that other processes and the hypervisor used between `earlier`
    /// and `self` (0 when nothing else ran; `None` when no time passed).
    pub fn other_cpus_since(&self, earlier: &CpuSnapshot) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        if total == 0 {
            return None;
        }
        let busy = self.busy.saturating_sub(earlier.busy) as f64;
        let own = self.own.saturating_sub(earlier.own) as f64;
        let wall = total as f64 / self.cpus as f64;
        Some(((busy - own) / wall).max(0.0))
    }
}

/// CPUs (on average) that other processes may take during a measurement before it is marked
/// unreliable: a tenth of the machine's logical cores.
pub fn other_cpus_limit(cores: usize) -> f64 {
    0.1 * cores as f64
}

/// What the machine was doing around one measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Conditions {
    /// The higher 1-minute load average read before and after.
    pub load: Option<f64>,
    /// CPUs other processes and the hypervisor used during it ([`CpuSnapshot`]).
    pub other_cpus: Option<f64>,
}

/// Runs `f` and records the [`Conditions`] around it.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Conditions) {
    let (load_before, cpu_before) = (load_average(), CpuSnapshot::now());
    let out = f();
    let cpu_after = CpuSnapshot::now();
    let other_cpus = cpu_before
        .zip(cpu_after)
        .and_then(|(a, b)| b.other_cpus_since(&a));
    let load = max_reading(load_before, load_average());
    (out, Conditions { load, other_cpus })
}

/// The higher of two optional readings (load averages, other processes' CPUs; either one where
/// the other is missing).
pub fn max_reading(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
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
        assert_eq!(max_reading(Some(1.0), Some(3.0)), Some(3.0));
        assert_eq!(max_reading(None, Some(3.0)), Some(3.0));
        assert_eq!(max_reading(None, None), None);
        let (v, c) = measure(|| (0..2_000_000u64).map(|i| i ^ (i >> 3)).sum::<u64>());
        assert!(v > 0);
        assert_eq!(c.load.is_some(), load_average().is_some());
        if cfg!(target_os = "linux") {
            assert!(c.other_cpus.is_none_or(|o| o >= 0.0), "{c:?}");
        }
    }

    #[test]
    fn other_cpus_subtract_this_process() {
        // 2 CPUs; between the snapshots 200 ticks passed on each (400 in all): 300 busy, of which
        // this process took 150 (utime 100, stime 30, children 20): others used 150 ticks over a
        // wall of 200, i.e. 0.75 CPUs
        let stat = |user: u64, idle: u64| {
            format!("cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1\ncpu1 1 0 0 1\nintr 5\n")
        };
        let own = |u: u64, s: u64, cu: u64| {
            format!("42 (my (odd) name) R 1 1 1 0 -1 0 0 0 0 0 {u} {s} {cu} 0 20 0 1 0")
        };
        let a = CpuSnapshot::parse(&stat(1000, 1000), &own(10, 5, 0)).unwrap_or_else(|| panic!());
        let b =
            CpuSnapshot::parse(&stat(1300, 1100), &own(110, 35, 20)).unwrap_or_else(|| panic!());
        assert_eq!(a.cpus, 2);
        assert_eq!(b.other_cpus_since(&a), Some(0.75));
        assert_eq!(a.other_cpus_since(&a), None);
        // this process alone: nothing else
        let c = CpuSnapshot::parse(&stat(1150, 1250), &own(160, 5, 0)).unwrap_or_else(|| panic!());
        assert_eq!(c.other_cpus_since(&a), Some(0.0));
        assert!(CpuSnapshot::parse("intr 5", &own(1, 1, 1)).is_none());
        assert_eq!(other_cpus_limit(2), 0.2);
    }
}
