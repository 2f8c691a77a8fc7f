//! The benchmark harness behind the generated tables of `docs/benchmarks.md`: each row runs our
//! implementation and its Python peer **interleaved** (ours, peer, ours, peer … after a warm-up of
//! each), each side in its own fresh worker process that loads the same data files once, and
//! records both sides' times, their spread, the load average around the row, the peak RSS of each
//! worker, and the machine (CPU model, cores, a copy-bandwidth probe, versions).
//!
//! Each row is measured with [`RunOptions::workers`] independent pairs of fresh workers, so a
//! process that lands in a slow state for its whole life does not set a side's time alone.
//! A row is re-measured (up to [`RunOptions::attempts`] times) when either side's max/min spread
//! exceeds 1.3 or the 1-minute load average exceeds the core count before or after it; a row still
//! failing that is kept and marked unreliable. Ratios are peer min / ours min.
//!
//! The worker protocol (both languages): the worker prints one JSON line when ready
//! (`{"ready": true, "versions": {...}}`), then answers each line on stdin: `run` → runs the case
//! once and prints `{"seconds": s}` (the case's own timing, without start-up and data loading);
//! `rss` → `{"peak_rss": bytes}`; end of input → exits.
//!
//! Tables: [`render_table`] turns a suite's JSON into Markdown; [`update_doc`] replaces the block
//! between `<!-- bench:NAME begin -->` and `<!-- bench:NAME end -->` in a document with it. A test
//! checks that every such block of `docs/benchmarks.md` equals the rendering of its committed
//! JSON (`docs/results/bench/NAME.json`), so no table is typed by hand.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A harness failure: what failed, as text (the harness is a tool, not a library API).
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// Result alias.
pub type Result<T> = std::result::Result<T, HarnessError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(HarnessError(msg.into()))
}

/// One side of a row, timed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SideTimes {
    /// Seconds of each round, in order.
    pub seconds: Vec<f64>,
    /// Fastest round.
    pub min: f64,
    /// Median round.
    pub median: f64,
    /// max / min.
    pub spread: f64,
    /// Peak resident memory of the worker process (data loading included).
    pub peak_rss_bytes: Option<u64>,
    /// Versions the worker reported.
    pub versions: BTreeMap<String, String>,
}

impl SideTimes {
    /// Summarises rounds.
    pub fn new(
        seconds: Vec<f64>,
        peak_rss_bytes: Option<u64>,
        versions: BTreeMap<String, String>,
    ) -> Self {
        let mut s = seconds.clone();
        s.sort_by(f64::total_cmp);
        let min = s.first().copied().unwrap_or(f64::NAN);
        let max = s.last().copied().unwrap_or(f64::NAN);
        let median = if s.is_empty() {
            f64::NAN
        } else if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Self {
            seconds,
            min,
            median,
            spread: max / min,
            peak_rss_bytes,
            versions,
        }
    }
}

/// One measured row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Case name.
    pub case: String,
    /// What it computes.
    pub description: String,
    /// Our side.
    pub ours: SideTimes,
    /// The peer.
    pub peer: SideTimes,
    /// `peer.min / ours.min` (> 1: ours is faster).
    pub ratio: f64,
    /// 1-minute load average before the (last) attempt.
    pub load_before: f64,
    /// After it.
    pub load_after: f64,
    /// Attempts made (a row is re-measured while unreliable).
    pub attempts: usize,
    /// Why the row is unreliable after every attempt (None: reliable).
    pub unreliable: Option<String>,
}

/// The machine a suite ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `/proc/cpuinfo` model name.
    pub cpu: String,
    /// Logical cores.
    pub cores: usize,
    /// Copy bandwidth (GiB/s, best of 5 copies of 256 MiB, one thread).
    pub copy_gib_s: f64,
    /// `rustc --version`.
    pub rustc: String,
    /// The vector instructions our GEMV kernels run with (`sparsity_kernels::simd_level`; empty
    /// in runs before run-time dispatch, which ran baseline SSE2).
    #[serde(default)]
    pub simd: String,
}

/// One suite's run: what the tables are generated from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteRun {
    /// Suite name.
    pub suite: String,
    /// The command that produced it.
    pub command: String,
    /// UTC date and time of the start.
    pub date: String,
    /// Git revision of the code measured.
    pub revision: String,
    /// Threads each side was given.
    pub threads: usize,
    /// Fresh worker pairs per row (per attempt).
    pub workers: usize,
    /// Interleaved rounds per worker pair after its warm-up.
    pub rounds: usize,
    /// The machine.
    pub machine: Machine,
    /// Every row.
    pub rows: Vec<Row>,
    /// Notes on the setup (shapes, peer, what is compared).
    pub notes: Vec<String>,
}

/// A worker process speaking the protocol.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    what: String,
    /// Versions reported when ready.
    pub versions: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Ready {
    ready: bool,
    #[serde(default)]
    versions: BTreeMap<String, String>,
}

impl Worker {
    /// Starts `cmd` and waits for its ready line.
    pub fn start(mut cmd: Command, what: &str) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| HarnessError(format!("{what}: cannot start: {e}")))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return err(format!("{what}: no pipes"));
        };
        let mut w = Self {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            what: what.to_string(),
            versions: BTreeMap::new(),
        };
        let line = w.line()?;
        let ready: Ready = serde_json::from_str(&line)
            .map_err(|e| HarnessError(format!("{what}: bad ready line {line:?}: {e}")))?;
        if !ready.ready {
            return err(format!("{what}: not ready: {line}"));
        }
        w.versions = ready.versions;
        Ok(w)
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        let n = self
            .stdout
            .read_line(&mut s)
            .map_err(|e| HarnessError(format!("{}: {e}", self.what)))?;
        if n == 0 {
            let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
            return err(format!("{}: exited ({status})", self.what));
        }
        Ok(s)
    }

    fn ask(&mut self, cmd: &str) -> Result<serde_json::Value> {
        writeln!(self.stdin, "{cmd}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| HarnessError(format!("{}: {e}", self.what)))?;
        let line = self.line()?;
        serde_json::from_str(&line)
            .map_err(|e| HarnessError(format!("{}: bad reply {line:?}: {e}", self.what)))
    }
}

/// One side of a row: runs its case once at a time.
pub trait Side {
    /// Runs the case once: its own seconds.
    fn run(&mut self) -> Result<f64>;
    /// Peak RSS of the process that runs the case.
    fn peak_rss(&mut self) -> Option<u64>;
    /// Versions of what runs the case.
    fn versions(&self) -> BTreeMap<String, String>;
    /// Ends it.
    fn finish(self: Box<Self>);
}

impl Side for Worker {
    fn run(&mut self) -> Result<f64> {
        let v = self.ask("run")?;
        v.get("seconds")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| HarnessError(format!("{}: no seconds in {v}", self.what)))
    }

    fn peak_rss(&mut self) -> Option<u64> {
        self.ask("rss").ok()?.get("peak_rss")?.as_u64()
    }

    fn versions(&self) -> BTreeMap<String, String> {
        self.versions.clone()
    }

    fn finish(self: Box<Self>) {
        let Self {
            mut child, stdin, ..
        } = *self;
        drop(stdin);
        let _ = child.wait();
    }
}

/// A side run inside this process (tests; its peak RSS is this process's).
pub struct InProcess<F: FnMut() -> f64> {
    /// Runs the case once, returning its seconds.
    pub run: F,
}

impl<F: FnMut() -> f64> Side for InProcess<F> {
    fn run(&mut self) -> Result<f64> {
        Ok((self.run)())
    }
    fn peak_rss(&mut self) -> Option<u64> {
        peak_rss_bytes()
    }
    fn versions(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
    fn finish(self: Box<Self>) {}
}

/// Starts a fresh side for one attempt.
pub type StartSide<'a> = dyn FnMut() -> Result<Box<dyn Side>> + 'a;

/// Serves the worker protocol on stdin/stdout for a case `run` (returns its own seconds).
pub fn serve(versions: BTreeMap<String, String>, mut run: impl FnMut() -> f64) -> Result<()> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let io = |e: std::io::Error| HarnessError(format!("worker: {e}"));
    writeln!(
        out,
        "{}",
        serde_json::json!({"ready": true, "versions": versions})
    )
    .map_err(io)?;
    out.flush().map_err(io)?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(io)?;
        match line.trim() {
            "run" => writeln!(out, "{}", serde_json::json!({"seconds": run()})).map_err(io)?,
            "rss" => writeln!(out, "{}", serde_json::json!({"peak_rss": peak_rss_bytes()}))
                .map_err(io)?,
            other => return err(format!("worker: unknown command {other:?}")),
        }
        out.flush().map_err(io)?;
    }
    Ok(())
}

/// This process's peak RSS (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The 1-minute load average (NaN where the system has none).
pub fn load_average() -> f64 {
    sparsity_experiments::machine::load_average().unwrap_or(f64::NAN)
}

/// The machine, with a copy-bandwidth probe.
pub fn machine() -> Machine {
    let cpu = sparsity_experiments::machine::cpu_model();
    let cores = sparsity_experiments::machine::logical_cores();
    let n = 64 << 20; // 64 Mi f32 = 256 MiB
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        cpu,
        cores,
        copy_gib_s: (n * 4) as f64 / best / f64::from(1u32 << 30),
        simd: sparsity_kernels::simd_level().name().into(),
        rustc,
    }
}

/// How rows are measured.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Independent worker pairs per attempt (fresh processes each): a process can land in a
    /// slow state for its whole life on a shared VM (measured: the same peer case at 0.66 s in
    /// one process and 1.03 s in the next), which rounds inside one process never reveal.
    pub workers: usize,
    /// Interleaved rounds per worker pair after one warm-up run of each side.
    pub rounds: usize,
    /// Attempts per row while it is unreliable.
    pub attempts: usize,
    /// max/min spread above which a side is unreliable.
    pub max_spread: f64,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            rounds: 3,
            attempts: 2,
            max_spread: 1.3,
        }
    }
}

/// Measures one row: for every attempt, `workers` pairs of fresh workers from `start_ours` and
/// `start_peer`, each pair with one warm-up run per side and then `rounds` × (ours, peer); the
/// times of all pairs form the attempt's samples, and each side's peak RSS is the largest of its
/// workers'.
pub fn measure_row(
    case: &str,
    description: &str,
    start_ours: &mut StartSide<'_>,
    start_peer: &mut StartSide<'_>,
    options: &RunOptions,
) -> Result<Row> {
    if options.workers * options.rounds < 3 || options.workers == 0 {
        return err(format!(
            "{case}: at least 3 timed runs per side (workers × rounds), got {} × {}",
            options.workers, options.rounds
        ));
    }
    let cores = sparsity_experiments::machine::logical_cores();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let load_before = load_average();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (mut rss_a, mut rss_b) = (None::<u64>, None::<u64>);
        let (mut versions_a, mut versions_b) = (BTreeMap::new(), BTreeMap::new());
        for _ in 0..options.workers {
            let mut ours = start_ours()?;
            let mut peer = start_peer()?;
            ours.run()?;
            peer.run()?;
            for _ in 0..options.rounds {
                a.push(ours.run()?);
                b.push(peer.run()?);
            }
            rss_a = rss_a.max(ours.peak_rss());
            rss_b = rss_b.max(peer.peak_rss());
            versions_a = ours.versions();
            versions_b = peer.versions();
            ours.finish();
            peer.finish();
        }
        let load_after = load_average();
        let ours_t = SideTimes::new(a, rss_a, versions_a);
        let peer_t = SideTimes::new(b, rss_b, versions_b);
        let mut why = Vec::new();
        for (side, t) in [("ours", &ours_t), ("peer", &peer_t)] {
            if t.spread.is_nan() || t.spread > options.max_spread {
                why.push(format!(
                    "{side} spread {:.2}× > {:.2}×",
                    t.spread, options.max_spread
                ));
            }
        }
        let exceeds = |l: f64| sparsity_experiments::machine::load_exceeds_cores(l, cores);
        if exceeds(load_before) || exceeds(load_after) {
            why.push(format!(
                "load average {load_before:.2} / {load_after:.2} above {cores} cores"
            ));
        }
        let unreliable = (!why.is_empty()).then(|| why.join("; "));
        if unreliable.is_none() || attempt >= options.attempts {
            return Ok(Row {
                case: case.to_string(),
                description: description.to_string(),
                ratio: peer_t.min / ours_t.min,
                ours: ours_t,
                peer: peer_t,
                load_before,
                load_after,
                attempts: attempt,
                unreliable,
            });
        }
    }
}

fn fmt_s(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn fmt_mib(b: Option<u64>) -> String {
    b.map_or("–".into(), |b| {
        format!("{:.0}", b as f64 / f64::from(1u32 << 20))
    })
}

/// The Markdown table of a suite run (what sits between its markers in `docs/benchmarks.md`).
pub fn render_table(run: &SuiteRun) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let versions: BTreeMap<&String, &String> = run
        .rows
        .iter()
        .flat_map(|r| r.peer.versions.iter().chain(&r.ours.versions))
        .collect();
    let _ = writeln!(
        s,
        "Generated from [`docs/results/bench/{0}.json`](results/bench/{0}.json) by `{1}` on {2} \
         (revision {3}): {4}, {5} cores, copy bandwidth {6:.1} GiB/s, {7}{12}; {8}. {9} thread(s) per \
         side; per row {10} pairs of fresh worker processes, each with a warm-up run per side and \
         then {11} interleaved rounds (ours, peer, …); min, median and spread over all of them.",
        run.suite,
        run.command,
        run.date,
        run.revision,
        run.machine.cpu,
        run.machine.cores,
        run.machine.copy_gib_s,
        run.machine.rustc,
        versions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        run.threads,
        run.workers,
        run.rounds,
        if run.machine.simd.is_empty() {
            String::new()
        } else {
            format!(", GEMV kernels `{}`", run.machine.simd)
        }
    );
    for n in &run.notes {
        let _ = writeln!(s, "{n}");
    }
    let _ = writeln!(
        s,
        "\n| case | ours min (median) | peer min (median) | peer / ours (min) | spread ours / peer | peak RSS MiB ours / peer | load before / after | reliable |\n|---|---|---|---|---|---|---|---|"
    );
    for r in &run.rows {
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} ({}) | **{:.2}×** | {:.2} / {:.2} | {} / {} | {:.2} / {:.2} | {} |",
            r.case,
            fmt_s(r.ours.min),
            fmt_s(r.ours.median),
            fmt_s(r.peer.min),
            fmt_s(r.peer.median),
            r.ratio,
            r.ours.spread,
            r.peer.spread,
            fmt_mib(r.ours.peak_rss_bytes),
            fmt_mib(r.peer.peak_rss_bytes),
            r.load_before,
            r.load_after,
            match &r.unreliable {
                None => "yes".to_string(),
                Some(w) => format!("no ({w}; {} attempts)", r.attempts),
            }
        );
    }
    s
}

fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- bench:{name} begin -->"),
        format!("<!-- bench:{name} end -->"),
    )
}

/// The generated blocks of a document: (suite name, content between its markers).
pub fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find("<!-- bench:") {
        let after = &rest[i + "<!-- bench:".len()..];
        let Some(j) = after.find(" begin -->") else {
            break;
        };
        let name = after[..j].to_string();
        let (begin, end) = markers(&name);
        let body_start = i + begin.len();
        let Some(k) = rest[body_start..].find(&end) else {
            break;
        };
        out.push((
            name,
            rest[body_start..body_start + k]
                .trim_matches('\n')
                .to_string(),
        ));
        rest = &rest[body_start + k + end.len()..];
    }
    out
}

/// `doc` with the block of `run.suite` replaced by [`render_table`] (appended at the end, under
/// a heading, when the document has no such block).
pub fn update_doc(doc: &str, run: &SuiteRun) -> String {
    replace_block(doc, &run.suite, &render_table(run))
}

/// The JSON file of block `decode`: written by `cargo xtask decode-bench --out-dir
/// docs/results/bench` (end-to-end decoding runs its engines in one process each, not through
/// the worker protocol).
pub const DECODE_JSON: &str = "decode_bench.json";

/// The body of generated block `name` from its committed JSON under `dir`: a suite's table; for
/// `decode` the rendering of `cargo xtask decode-bench`'s report; for `sparse_decode` the table
/// `cargo xtask sparse-decode` wrote.
pub fn render_block(dir: &Path, name: &str) -> Result<String> {
    if name == "sparse_decode" {
        return sparse_decode_block(dir);
    }
    if name == "decode" {
        let p = dir.join(DECODE_JSON);
        let text = std::fs::read_to_string(&p)
            .map_err(|e| HarnessError(format!("{}: {e}", p.display())))?;
        let report: sparsity_experiments::decode_bench::DecodeBenchReport =
            serde_json::from_str(&text)
                .map_err(|e| HarnessError(format!("{}: {e}", p.display())))?;
        return Ok(report
            .doc_block(&format!("docs/results/bench/{DECODE_JSON}"))
            .trim_end()
            .to_string());
    }
    Ok(render_table(&read_run(dir, name)?).trim_end().to_string())
}

/// The body of block `sparse_decode`: `cargo xtask sparse-decode --out-dir
/// docs/results/bench/sparse_decode`'s Markdown (its title dropped) under a line naming the run
/// from its JSON.
fn sparse_decode_block(dir: &Path) -> Result<String> {
    let d = dir.join("sparse_decode");
    let read = |name: &str| {
        let p = d.join(name);
        std::fs::read_to_string(&p).map_err(|e| HarnessError(format!("{}: {e}", p.display())))
    };
    let json: serde_json::Value = serde_json::from_str(&read("sparse_decode.json")?)
        .map_err(|e| HarnessError(format!("sparse_decode.json: {e}")))?;
    let field = |k: &str| json[k].as_str().unwrap_or("unrecorded").to_string();
    let o = &json["options"];
    let md = read("sparse_decode.md")?;
    let body = md
        .strip_prefix("# ")
        .and_then(|rest| rest.split_once('\n'))
        .map_or(md.as_str(), |(_, rest)| rest);
    Ok(format!(
        "Generated from [`docs/results/bench/sparse_decode/`](results/bench/sparse_decode/) by \
         `cargo xtask sparse-decode --decode-windows {} --nsamples {} --sparsities {} --out-dir \
         docs/results/bench/sparse_decode` on {} (revision {}): {}{}.\n\n{}",
        o["decode_windows"],
        o["nsamples"],
        o["sparsities"]
            .as_array()
            .map(|v| v
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
        field("date"),
        field("git_revision"),
        field("cpu"),
        sparse_decode_conditions(&json),
        body.trim()
    ))
}

/// The SIMD level, the CPU time of other processes and the load average of a
/// `sparse_decode.json` (absent in runs before they were recorded), with the unreliable mark when
/// other processes took more than a tenth of the cores (the decode-bench rule; the load average
/// counts the decoder's own threads).
fn sparse_decode_conditions(json: &serde_json::Value) -> String {
    let mut s = String::new();
    if let Some(simd) = json["simd"].as_str() {
        s.push_str(&format!("; GEMV kernels: `{simd}`"));
    }
    let cores = json["cores"].as_u64().unwrap_or(0) as usize;
    match json["other_cpus_max"].as_f64() {
        Some(other) => {
            s.push_str(&format!(
                "; other processes used at most {other:.2} CPUs during the timed decodes"
            ));
            let limit = sparsity_experiments::machine::other_cpus_limit(cores);
            if cores > 0 && other > limit {
                s.push_str(&format!(
                    " (**unreliable**: more than {limit:.1}; the tok/s columns shared the machine)"
                ));
            }
        }
        None => s.push_str("; other processes' CPU time not recorded"),
    }
    if let Some(load) = json["load_max"].as_f64() {
        s.push_str(&format!(", highest 1-minute load average {load:.2}"));
    }
    s
}

/// Replaces the body of block `name` in `doc` (appends the block when absent).
pub fn replace_block(doc: &str, name: &str, body: &str) -> String {
    let (begin, end) = markers(name);
    match (doc.find(&begin), doc.find(&end)) {
        (Some(i), Some(j)) if j > i => format!(
            "{}{begin}\n{}\n{end}{}",
            &doc[..i],
            body.trim_end(),
            &doc[j + end.len()..]
        ),
        _ => format!(
            "{}\n\n## Generated: {name}\n\n{begin}\n{}\n{end}\n",
            doc.trim_end(),
            body.trim_end()
        ),
    }
}

/// The committed JSON of suite `name` under `dir`.
pub fn read_run(dir: &Path, name: &str) -> Result<SuiteRun> {
    let p = dir.join(format!("{name}.json"));
    let text =
        std::fs::read_to_string(&p).map_err(|e| HarnessError(format!("{}: {e}", p.display())))?;
    serde_json::from_str(&text).map_err(|e| HarnessError(format!("{}: {e}", p.display())))
}

/// The workspace root (this crate sits in `benches/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes a little-endian f32 `.npy` (C order) through a temporary file and a rename.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let body: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy_raw(path, "<f4", shape, &body)
}

/// Writes a `.npy` (version 1, C order) of element type `descr` (`<f4`, `|b1` …) whose `body`
/// holds the elements' bytes, through a temporary file and a rename.
pub fn write_npy_raw(path: &Path, descr: &str, shape: &[usize], body: &[u8]) -> Result<()> {
    let dims = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let dims = if shape.len() == 1 {
        format!("{dims},")
    } else {
        dims
    };
    let mut h =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}").into_bytes();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut bytes = Vec::with_capacity(10 + h.len() + body.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(body);
    sparsity_io::write_atomic(path, &bytes)
        .map_err(|e| HarnessError(format!("{}: {e}", path.display())))
}

/// Reads a `.npy` (version 1, C order) whose element type is `descr` and whose elements are
/// `item` bytes each: (shape, the elements' bytes).
pub fn read_npy_raw(path: &Path, descr: &str, item: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let (mut f, shape, len) = open_npy(path, descr, item)?;
    let mut body = Vec::with_capacity(len);
    f.read_to_end(&mut body)
        .map_err(|e| HarnessError(format!("{}: {e}", path.display())))?;
    Ok((shape, body))
}

/// Opens a version-1 C-order `.npy` of element type `descr` (`item` bytes each), checks that the
/// file holds exactly the data its shape needs, and returns the file positioned at the data, the
/// shape and the data's length in bytes.
fn open_npy(path: &Path, descr: &str, item: usize) -> Result<(std::fs::File, Vec<usize>, usize)> {
    let io = |e: std::io::Error| HarnessError(format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    let mut pre = [0u8; 10];
    f.read_exact(&mut pre)
        .map_err(|_| HarnessError(format!("{}: not a version-1 .npy", path.display())))?;
    if &pre[..8] != b"\x93NUMPY\x01\x00" {
        return err(format!("{}: not a version-1 .npy", path.display()));
    }
    let hl = u16::from_le_bytes([pre[8], pre[9]]) as usize;
    let mut raw = vec![0u8; hl];
    f.read_exact(&mut raw)
        .map_err(|_| HarnessError(format!("{}: truncated .npy header", path.display())))?;
    let header = String::from_utf8_lossy(&raw).to_string();
    if !header.contains(&format!("'descr': '{descr}'"))
        || !header.contains("'fortran_order': False")
    {
        return err(format!(
            "{}: expected C-order {descr}, got {header}",
            path.display()
        ));
    }
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_default();
    let len = shape
        .iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| HarnessError(format!("{}: shape {shape:?} overflows", path.display())))?;
    let have = file_len.saturating_sub(10 + hl as u64);
    if have != len as u64 {
        return err(format!(
            "{}: shape {shape:?} needs {len} bytes, file has {have}",
            path.display()
        ));
    }
    Ok((f, shape, len))
}

/// Reads a little-endian f32 `.npy` (C order, version 1): (shape, data). The data is converted
/// one MiB at a time, so the peak is the array plus that buffer (it was the file twice).
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let (mut f, shape, len) = open_npy(path, "<f4", 4)?;
    let mut data = Vec::with_capacity(len / 4);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        f.read_exact(&mut buf[..n])
            .map_err(|e| HarnessError(format!("{}: {e}", path.display())))?;
        data.extend(
            buf[..n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        left -= n;
    }
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_table_equals_the_rendering_of_its_committed_json() {
        let root = workspace_root();
        let doc = std::fs::read_to_string(root.join("docs/benchmarks.md")).unwrap();
        let found = blocks(&doc);
        assert!(
            !found.is_empty(),
            "docs/benchmarks.md has no generated table"
        );
        for (name, body) in found {
            assert_eq!(
                body,
                render_block(&root.join("docs/results/bench"), &name).unwrap(),
                "docs/benchmarks.md's `{name}` table differs from docs/results/bench/{name}.json: \
                 regenerate it (`cargo bench -p sparsity-benches --bench suite -- tables`)"
            );
        }
    }

    #[test]
    fn sparse_decode_conditions_mark_a_loaded_machine() {
        let calm = serde_json::json!({"simd": "avx512", "load_max": 2.2, "other_cpus_max": 0.05, "cores": 2});
        assert_eq!(
            sparse_decode_conditions(&calm),
            "; GEMV kernels: `avx512`; other processes used at most 0.05 CPUs during the timed \
             decodes, highest 1-minute load average 2.20"
        );
        let busy = serde_json::json!({"simd": "avx2", "other_cpus_max": 0.75, "cores": 2});
        assert!(
            sparse_decode_conditions(&busy)
                .contains("0.75 CPUs during the timed decodes (**unreliable**: more than 0.2")
        );
        assert_eq!(
            sparse_decode_conditions(&serde_json::json!({})),
            "; other processes' CPU time not recorded"
        );
    }

    #[test]
    fn npy_round_trip_and_summaries() {
        let dir = std::env::temp_dir().join(format!("harness-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        write_npy(&p, &[2, 3, 4], &data).unwrap();
        assert_eq!(read_npy(&p).unwrap(), (vec![2, 3, 4], data));
        // more than one conversion buffer (1 MiB), and a length that is not a multiple of it
        let big: Vec<f32> = (0..300_001).map(|i| (i as f32).sin()).collect();
        write_npy(&p, &[300_001], &big).unwrap();
        assert_eq!(read_npy(&p).unwrap(), (vec![300_001], big));
        // a file shorter than its shape needs is an error naming the file and both sizes
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(
            e.contains("a.npy") && e.contains("needs 1200004 bytes, file has 1200000"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let t = SideTimes::new(vec![2.0, 1.0, 4.0, 3.0], None, BTreeMap::new());
        assert_eq!((t.min, t.median, t.spread), (1.0, 2.5, 4.0));
    }

    /// A smoke run of the harness on a tiny case: ours a Rust sum in this process, the peer the
    /// same sum in a Python worker (`benches/peers/worker.py --suite smoke`, no numpy needed):
    /// interleaved rounds, the unreliable rule, the JSON and the table.
    #[test]
    fn smoke_run_on_a_tiny_case() {
        let worker = workspace_root().join("benches/peers/worker.py");
        let mut peer = || -> Result<Box<dyn Side>> {
            let mut c = Command::new("python3");
            c.arg(&worker)
                .args(["--suite", "smoke", "--case", "sum", "--data", "-"]);
            Ok(Box::new(Worker::start(c, "python smoke worker")?))
        };
        let mut ours = || -> Result<Box<dyn Side>> {
            Ok(Box::new(InProcess {
                run: || {
                    let t = Instant::now();
                    let s: f64 = (0..200_000).map(|i| f64::from(i) * 0.5).sum();
                    std::hint::black_box(s);
                    t.elapsed().as_secs_f64()
                },
            }))
        };
        let row = measure_row(
            "sum",
            "a tiny sum",
            &mut ours,
            &mut peer,
            &RunOptions {
                workers: 2,
                rounds: 2,
                attempts: 1,
                max_spread: 1e9,
            },
        )
        .unwrap();
        assert_eq!(row.ours.seconds.len(), 4);
        assert_eq!(row.peer.seconds.len(), 4);
        assert!(row.ours.min > 0.0 && row.peer.min > 0.0);
        assert!((row.ratio - row.peer.min / row.ours.min).abs() < 1e-12);
        assert!(row.ours.peak_rss_bytes.unwrap_or(0) > 0);
        assert!(row.peer.peak_rss_bytes.unwrap_or(0) > 0);
        assert!(row.peer.versions.contains_key("python"));
        // an impossible spread limit marks the row unreliable after its attempts
        let row2 = measure_row(
            "sum",
            "a tiny sum",
            &mut ours,
            &mut peer,
            &RunOptions {
                workers: 1,
                rounds: 3,
                attempts: 2,
                max_spread: 0.5,
            },
        )
        .unwrap();
        assert_eq!(row2.attempts, 2);
        assert!(row2.unreliable.as_deref().unwrap_or("").contains("spread"));
        let run = SuiteRun {
            suite: "smoke".into(),
            command: "test".into(),
            date: "2026-12-04".into(),
            revision: "x".into(),
            threads: 1,
            workers: 2,
            rounds: 2,
            machine: Machine {
                cpu: "cpu".into(),
                cores: 2,
                copy_gib_s: 10.0,
                rustc: "rustc".into(),
                simd: "avx2".into(),
            },
            rows: vec![row, row2],
            notes: vec![],
        };
        let back: SuiteRun = serde_json::from_str(&serde_json::to_string(&run).unwrap()).unwrap();
        assert_eq!(back, run);
        let doc = "# B\n\n<!-- bench:smoke begin -->\nold\n<!-- bench:smoke end -->\n\ntail\n";
        let new = update_doc(doc, &run);
        assert!(new.ends_with("\n\ntail\n") && !new.contains("old"));
        assert_eq!(
            blocks(&new),
            vec![(
                "smoke".to_string(),
                render_table(&run).trim_end().to_string()
            )]
        );
        assert!(render_table(&run).contains("| sum |"));
    }
}
