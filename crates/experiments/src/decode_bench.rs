//! `cargo xtask decode-bench`: end-to-end batch-1 greedy decoding of a Llama-shaped model with
//! random weights at LLM size (TinyLlama-1.1B's shape by default) on the CPU: our dense decoder,
//! our TEAL-sparse decoder at several activation sparsities, transformers' `generate` on the
//! same weights (`benches/peers/decode_peer.py`, PyTorch CPU, same thread count) in the same run,
//! and the memory-bandwidth floor.
//!
//! Protocol, per weight dtype (f32, bf16): one decoder is built and reused; for each level (dense,
//! then each sparsity) the sequence is reset, the prompt is fed at once (the prefill,
//! [`Decoder::prefill`]: every layer over the whole prompt, each weight read once per eight
//! tokens), then `new_tokens` tokens are generated greedily (argmax).
//! Decode tokens/s = new tokens / time of the generation steps. The peer times `generate` with
//! 1 and with `new_tokens` new tokens (greedy, `min_new_tokens` forcing the length) and reports
//! (new_tokens − 1) / (t_N − t_1) as its decode rate, so prefill is excluded on both sides.
//! Thresholds are calibrated on `calib_prompts` random prompts (uniform allocation, TEAL's
//! recipe, [`sparsity_decoding::sparse_decode::calibrate_thresholds`]) over every linear
//! layer's input (q/k/v, o, gate/up, down). The bandwidth floor is (bytes of every weight read
//! per token) / (STREAM-copy bandwidth measured in the same run): no decoder that reads each
//! weight once per token can beat it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sparsity_decoding::decode::{Decoder, WeightDtype};
use sparsity_decoding::sparse_decode::{Thresholds, calibrate_thresholds};
use sparsity_models::{CausalLm, Llama, LlamaConfig};

use crate::error::{ExperimentError, Result, StepContext};
use crate::results::git_revision;

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeBenchConfig {
    /// The model shape (random weights, N(0, 0.02²), unit norms).
    pub model: LlamaConfig,
    /// Seed of the weights, prompts and calibration prompts.
    pub seed: u64,
    /// Weight dtypes of our decoder (and of the peer's model).
    pub dtypes: Vec<WeightDtype>,
    /// Activation sparsities of the sparse decoder.
    pub sparsities: Vec<f64>,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// Generated tokens.
    pub new_tokens: usize,
    /// Random prompts the thresholds are calibrated on (each `prompt_len` tokens).
    pub calib_prompts: usize,
    /// Buffer of the bandwidth probe, bytes.
    pub bandwidth_bytes: usize,
    /// Memory budget in bytes (`--max-memory`); `None`: the memory the system reports available.
    pub max_memory: Option<u64>,
    /// Interleaved rounds: each round runs every level of ours (a fresh decoder per dtype), then
    /// each peer, so slow phases of a shared machine hit every engine; a row reports its fastest
    /// round and the spread. Absent in JSON from before rounds existed: 1.
    #[serde(default = "one_round")]
    pub rounds: usize,
}

fn one_round() -> usize {
    1
}

impl DecodeBenchConfig {
    /// TinyLlama-1.1B's shape: hidden 2048, 22 layers, intermediate 5632, 32 heads, 4 key/value
    /// heads, vocabulary 32000; 128 prompt + 128 new tokens; f32 and bf16; 25/40/50/65 %.
    pub fn tinyllama() -> Self {
        Self {
            model: LlamaConfig {
                vocab_size: 32000,
                hidden_size: 2048,
                intermediate_size: 5632,
                num_hidden_layers: 22,
                num_attention_heads: 32,
                num_key_value_heads: Some(4),
                max_position_embeddings: 2048,
                rms_norm_eps: 1e-5,
                ..LlamaConfig::default()
            },
            seed: 0,
            dtypes: vec![WeightDtype::F32, WeightDtype::Bf16],
            sparsities: vec![0.25, 0.4, 0.5, 0.65],
            prompt_len: 128,
            new_tokens: 128,
            calib_prompts: 4,
            bandwidth_bytes: 1 << 30,
            max_memory: None,
            rounds: 1,
        }
    }

    /// The run's peak memory, from the model's shape (computed in f64: no size overflows it):
    /// the burn model (f32), one decoder's weights (the widest dtype asked for; f32 ones share
    /// the model's layout, so counted again), the key/value caches at `prompt_len + new_tokens`,
    /// and the calibration captures, and with `peers` Python peers the one peer process alive at
    /// a time holding its own f32 copy. The bandwidth probe's buffers are freed before the model
    /// is built (and are smaller), so they do not add to the peak.
    pub fn memory_estimate(&self, peers: usize) -> sparsity_io::budget::MemoryEstimate {
        let m = &self.model;
        let h = m.hidden_size as f64;
        let heads = m.num_attention_heads as f64;
        let hd = m.head_dim.map_or(h / heads.max(1.0), |d| d as f64);
        let kv = m.num_key_value_heads.unwrap_or(m.num_attention_heads) as f64 * hd;
        let inter = m.intermediate_size as f64;
        let layers = m.num_hidden_layers as f64;
        let vocab = m.vocab_size as f64;
        let per_layer = h * heads * hd * 2.0 + 2.0 * h * kv + 3.0 * h * inter + 2.0 * h;
        let params = layers * per_layer + vocab * h * if m.tie_word_embeddings { 1.0 } else { 2.0 };
        let widest = self
            .dtypes
            .iter()
            .map(|d| {
                if matches!(d, WeightDtype::F32) {
                    4.0
                } else {
                    2.0
                }
            })
            .fold(0.0, f64::max);
        let tokens = (self.prompt_len + self.new_tokens) as f64;
        let mut e = sparsity_io::budget::MemoryEstimate::new(format!(
            "decode-bench of a {} layer, hidden {} model ({:.3e} parameters, {} + {} tokens)",
            m.num_hidden_layers, m.hidden_size, params, self.prompt_len, self.new_tokens
        ))
        .part("model (f32)", 4.0 * params)
        .part("decoder weights", widest * params)
        .part("key/value caches", 2.0 * 2.0 * layers * tokens * kv * 4.0)
        .part(
            "calibration captures",
            self.calib_prompts as f64
                * self.prompt_len as f64
                * layers
                * (4.0 * h + 2.0 * inter)
                * 4.0,
        );
        if peers > 0 {
            e = e.part("peer process (f32 copy)", 4.0 * params);
        }
        e
    }

    fn validate(&self) -> Result<()> {
        if self.prompt_len == 0 || self.new_tokens < 2 {
            return Err(ExperimentError::invalid(
                "--prompt-len / --new-tokens",
                "need a prompt and at least 2 new tokens",
            ));
        }
        if self.prompt_len + self.new_tokens > self.model.max_position_embeddings {
            return Err(ExperimentError::invalid(
                "--prompt-len / --new-tokens",
                format!(
                    "{} + {} tokens exceed the model's {} positions",
                    self.prompt_len, self.new_tokens, self.model.max_position_embeddings
                ),
            ));
        }
        if self.dtypes.is_empty() {
            return Err(ExperimentError::invalid(
                "--dtypes",
                "no weight dtype given",
            ));
        }
        if self.rounds == 0 {
            return Err(ExperimentError::invalid(
                "--rounds",
                "need at least 1 round",
            ));
        }
        if let Some(p) = self.sparsities.iter().find(|p| !(**p > 0.0 && **p < 1.0)) {
            return Err(ExperimentError::invalid(
                "--sparsities",
                format!("{p} is not in (0, 1)"),
            ));
        }
        self.model
            .validate(Path::new("<decode-bench model>"))
            .step("the benchmark's model shape")
    }

    /// Bytes of weights one generated token reads at `dtype`: every linear layer of every block
    /// and the head, plus one embedding row (norms are negligible and omitted).
    pub fn weight_bytes_per_token(&self, dtype: WeightDtype) -> f64 {
        let c = &self.model;
        let hd = c.head_dim();
        let per_layer = c.hidden_size * c.num_attention_heads * hd * 2
            + c.hidden_size * c.kv_heads() * hd * 2
            + 3 * c.hidden_size * c.intermediate_size;
        let elements =
            per_layer * c.num_hidden_layers + c.vocab_size * c.hidden_size + c.hidden_size;
        elements as f64 * element_bytes(dtype)
    }
}

fn element_bytes(dtype: WeightDtype) -> f64 {
    match dtype {
        WeightDtype::F32 => 4.0,
        WeightDtype::Bf16 | WeightDtype::F16 => 2.0,
    }
}

/// One measured configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeBenchRow {
    /// `ours` or `transformers`.
    pub engine: String,
    /// Weight dtype.
    pub dtype: WeightDtype,
    /// Target activation sparsity (`None`: dense).
    pub sparsity: Option<f64>,
    /// Fraction of the masked layers' inputs actually skipped during generation.
    pub achieved_sparsity: Option<f64>,
    /// Prompt processing, seconds.
    pub prefill_seconds: f64,
    /// Generated tokens per second (prefill excluded): the fastest round.
    pub decode_tokens_per_second: f64,
    /// The generated ids.
    pub generated: Vec<u32>,
    /// Decode tokens/s of every round, in order (empty in JSON from before rounds existed).
    #[serde(default)]
    pub rounds_tokens_per_second: Vec<f64>,
    /// Highest 1-minute load average read before or after any of the row's rounds (`None`:
    /// not recorded, as in runs before 2026-12-04 evening). It counts the engine's own threads.
    #[serde(default)]
    pub load_max: Option<f64>,
    /// Highest average number of CPUs that other processes and the hypervisor used during any
    /// of the row's rounds (`crate::machine::CpuSnapshot`; `None`: not recorded).
    #[serde(default)]
    pub other_cpus_max: Option<f64>,
}

impl DecodeBenchRow {
    /// Fastest / slowest round's tokens/s (1 for a single round; `None` before rounds existed).
    pub fn spread(&self) -> Option<f64> {
        let r = &self.rounds_tokens_per_second;
        let max = r.iter().copied().fold(f64::NAN, f64::max);
        let min = r.iter().copied().fold(f64::NAN, f64::min);
        (!r.is_empty() && min > 0.0).then(|| max / min)
    }

    /// Adds round `other`: keeps the fastest decode rate, the shortest prefill and the highest
    /// load average.
    fn add_round(&mut self, other: &DecodeBenchRow) {
        let tps = other.decode_tokens_per_second;
        self.rounds_tokens_per_second.push(tps);
        self.decode_tokens_per_second = self.decode_tokens_per_second.max(tps);
        self.prefill_seconds = self.prefill_seconds.min(other.prefill_seconds);
        self.load_max = crate::machine::max_reading(self.load_max, other.load_max);
        self.other_cpus_max =
            crate::machine::max_reading(self.other_cpus_max, other.other_cpus_max);
    }

    /// Why the row is unreliable: its rounds spread more than [`MAX_SPREAD`] (fastest /
    /// slowest), or other processes took more than a tenth of the `cores` while any round ran
    /// ([`crate::machine::other_cpus_limit`]). The load average is recorded but not a verdict
    /// here: the engines use every core, and their own threads lift it above the core count
    /// (module docs of [`crate::machine`]). `None`: reliable (or nothing recorded).
    pub fn unreliable(&self, cores: usize) -> Option<String> {
        let mut why = Vec::new();
        if let Some(spread) = self.spread().filter(|&x| x > MAX_SPREAD) {
            why.push(format!("spread {spread:.2}× > {MAX_SPREAD}×"));
        }
        let limit = crate::machine::other_cpus_limit(cores);
        if let Some(other) = self.other_cpus_max.filter(|&o| cores > 0 && o > limit) {
            why.push(format!("other processes used {other:.2} CPUs > {limit:.1}"));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// Fastest / slowest round above which a row is unreliable (the harness's rule).
pub const MAX_SPREAD: f64 = 1.3;

/// The memory-bandwidth floor of one dtype.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandwidthFloor {
    /// Weight dtype.
    pub dtype: WeightDtype,
    /// Weight bytes read per generated token.
    pub bytes_per_token: f64,
    /// bandwidth / bytes per token, with the STREAM-copy bandwidth.
    pub floor_tokens_per_second: f64,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeBenchReport {
    /// Code revision.
    pub git_revision: String,
    /// The options.
    pub config: DecodeBenchConfig,
    /// Rayon threads of our decoder.
    pub threads: usize,
    /// STREAM copy bandwidth, GB/s (read + write bytes).
    pub copy_gbs: f64,
    /// Read-only bandwidth, GB/s.
    pub read_gbs: f64,
    /// Bandwidth floors per dtype.
    pub floors: Vec<BandwidthFloor>,
    /// Every measured configuration.
    pub rows: Vec<DecodeBenchRow>,
    /// Why the peer rows are missing, when they are.
    pub peer_note: Option<String>,
    /// When the run started (UTC, minutes).
    #[serde(default)]
    pub date: String,
    /// The CPU (`model name` of /proc/cpuinfo) and its logical cores.
    #[serde(default)]
    pub cpu: String,
    /// The command line that produced the run (set by the caller; shown in the docs block).
    #[serde(default)]
    pub command: String,
    /// Logical cores of the machine (0: not recorded); rows measured while the load average
    /// exceeded it are unreliable.
    #[serde(default)]
    pub cores: usize,
    /// The vector instructions our GEMV kernels ran with (`sparsity_kernels::simd_level`:
    /// `avx512`, `avx2`, `portable`; empty: not recorded, before run-time dispatch existed).
    #[serde(default)]
    pub simd: String,
}

/// How to run a peer: a Python script taking `--model --prompt --dtype --new-tokens --threads`
/// and printing one JSON line (`benches/peers/decode_peer.py` for transformers,
/// `benches/peers/llamacpp_peer.py` for llama.cpp).
#[derive(Debug, Clone)]
pub struct Peer {
    /// The engine's name in the table (`transformers`, `llama.cpp`).
    pub name: String,
    /// Python with the peer's requirements (benches/peers/requirements-*.txt).
    pub python: PathBuf,
    /// The script.
    pub script: PathBuf,
    /// Run the bf16 rows with f16 weights (llama.cpp: f16 is its usual half format).
    pub half_as_f16: bool,
    /// Extra arguments (e.g. `--gguf-dir`).
    pub extra_args: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct PeerOutput {
    prefill_seconds: f64,
    decode_tokens_per_second: f64,
    generated: Vec<u32>,
}

fn random_ids(rng: &mut ChaCha8Rng, vocab: usize, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// The greedy token; a non-finite logit is an error (a NaN would otherwise pick an arbitrary id).
fn argmax(v: &[f32], step: usize) -> Result<u32> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(ExperimentError::invalid(
            "decode-bench",
            format!("logit {i} at generation step {step} is not finite"),
        ));
    }
    let mut best = 0usize;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    Ok(best as u32)
}

/// Prefill then greedy generation on `decoder`: (prefill seconds, decode tokens/s, ids).
fn generate(
    decoder: &mut Decoder,
    prompt: &[u32],
    new_tokens: usize,
) -> Result<(f64, f64, Vec<u32>)> {
    decoder.reset();
    let t0 = Instant::now();
    let mut logits = decoder.prefill(prompt).step("prefill")?;
    let prefill = t0.elapsed().as_secs_f64();
    let mut out = vec![argmax(&logits, 0)?];
    let t1 = Instant::now();
    while out.len() < new_tokens {
        let last = out[out.len() - 1];
        logits = decoder.step(last).step("decoding")?;
        out.push(argmax(&logits, out.len())?);
    }
    let secs = t1.elapsed().as_secs_f64();
    Ok((prefill, (new_tokens - 1) as f64 / secs.max(1e-12), out))
}

/// Runs the benchmark: the model is built and saved under `work_dir` (for the peers),
/// thresholds calibrated, then ours and each peer measured per dtype. Progress as `tracing`
/// spans.
pub fn run_decode_bench(
    config: &DecodeBenchConfig,
    peers: &[Peer],
    work_dir: &Path,
    device: &Device,
) -> Result<DecodeBenchReport> {
    config.validate()?;
    config
        .memory_estimate(peers.len())
        .check(
            config.max_memory,
            "use fewer --layers, a shorter --prompt-len / --new-tokens, or raise --max-memory",
        )
        .step("checking the memory budget")?;
    std::fs::create_dir_all(work_dir)
        .with_step(|| format!("creating the work directory {}", work_dir.display()))?;
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let total = config.rounds * config.dtypes.len() * (config.sparsities.len() + 1 + peers.len());
    let span = tracing::info_span!(
        "decode-bench",
        progress_total = total as u64,
        progress_unit = "runs"
    );
    let _enter = span.enter();
    let probe = sparsity_kernels::bench::measure_bandwidth(config.bandwidth_bytes, 5);
    tracing::info!(
        copy_gbs = probe.copy_gbs,
        read_gbs = probe.read_gbs,
        "bandwidth"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let vocab = config.model.vocab_size;
    let prompt = random_ids(&mut rng, vocab, config.prompt_len);
    let calib: Vec<Vec<u32>> = (0..config.calib_prompts)
        .map(|_| random_ids(&mut rng, vocab, config.prompt_len))
        .collect();
    tracing::info!("building the model");
    let model =
        CausalLm::new(Llama::init(&config.model, config.seed, device).step("building the model")?);
    let model_dir = work_dir.join("model");
    if !peers.is_empty() {
        tracing::info!(dir = %model_dir.display(), "saving the weights for the peers");
        model.save_pretrained(&model_dir).step("saving the model")?;
        let prompt_path = work_dir.join("prompt.json");
        crate::write_json(&prompt_path, &prompt)?;
    }
    tracing::info!("calibrating thresholds");
    let thresholds: Vec<Thresholds> = if config.sparsities.is_empty() || calib.is_empty() {
        Vec::new()
    } else {
        calibrate_thresholds(&model, &calib, &config.sparsities, 1, device)
            .step("calibrating thresholds")?
    };
    let mut rows: Vec<DecodeBenchRow> = Vec::new();
    let mut peer_notes: Vec<String> = Vec::new();
    // Adds one round of a configuration: a new row in the first round, else into its row.
    let record = |rows: &mut Vec<DecodeBenchRow>, row: DecodeBenchRow| {
        let same = |r: &&mut DecodeBenchRow| {
            r.engine == row.engine && r.dtype == row.dtype && r.sparsity == row.sparsity
        };
        match rows.iter_mut().find(|r| same(r)) {
            Some(r) => r.add_round(&row),
            None => rows.push(DecodeBenchRow {
                rounds_tokens_per_second: vec![row.decode_tokens_per_second],
                ..row
            }),
        }
    };
    let levels: Vec<Option<&Thresholds>> = std::iter::once(None)
        .chain(thresholds.iter().map(Some))
        .collect();
    for &dtype in &config.dtypes {
        for round in 0..config.rounds {
            let mut decoder =
                Decoder::with_weights(&model, None, dtype).step("building the decoder")?;
            for th in &levels {
                decoder.set_thresholds(*th).step("setting thresholds")?;
                let (generation, cond) =
                    crate::machine::measure(|| generate(&mut decoder, &prompt, config.new_tokens));
                let (prefill, tps, generated) = generation?;
                let kept = decoder.kept_inputs();
                let row = DecodeBenchRow {
                    engine: "ours".into(),
                    dtype,
                    sparsity: th.map(|t| t.target),
                    achieved_sparsity: th
                        .map(|_| 1.0 - kept.kept as f64 / kept.total.max(1) as f64),
                    prefill_seconds: prefill,
                    decode_tokens_per_second: tps,
                    generated,
                    rounds_tokens_per_second: Vec::new(),
                    load_max: cond.load,
                    other_cpus_max: cond.other_cpus,
                };
                tracing::info!(?dtype, round, sparsity = ?row.sparsity, tokens_per_second = tps, "ours");
                tracing::trace!(target: sparsity_models::PROGRESS, progress_inc = 1u64);
                record(&mut rows, row);
            }
            // the peer gets the memory our decoder held
            drop(decoder);
            for p in peers {
                let peer_dtype = if p.half_as_f16 && dtype == WeightDtype::Bf16 {
                    WeightDtype::F16
                } else {
                    dtype
                };
                let (peer_out, cond) = crate::machine::measure(|| {
                    run_peer(
                        p,
                        &model_dir,
                        &work_dir.join("prompt.json"),
                        peer_dtype,
                        config,
                        probe.threads,
                    )
                });
                match peer_out {
                    Ok(out) => {
                        tracing::info!(
                            ?peer_dtype,
                            round,
                            tokens_per_second = out.decode_tokens_per_second,
                            "{}",
                            p.name
                        );
                        record(
                            &mut rows,
                            DecodeBenchRow {
                                engine: p.name.clone(),
                                dtype: peer_dtype,
                                sparsity: None,
                                achieved_sparsity: None,
                                prefill_seconds: out.prefill_seconds,
                                decode_tokens_per_second: out.decode_tokens_per_second,
                                generated: out.generated,
                                rounds_tokens_per_second: Vec::new(),
                                load_max: cond.load,
                                other_cpus_max: cond.other_cpus,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the {} peer failed", p.name);
                        peer_notes.push(format!("{} ({peer_dtype:?}, round {round}): {e}", p.name));
                    }
                }
                tracing::trace!(target: sparsity_models::PROGRESS, progress_inc = 1u64);
            }
        }
    }
    if peers.is_empty() {
        peer_notes.push("no --python given: no peer measured".into());
    }
    let peer_note = (!peer_notes.is_empty()).then(|| peer_notes.join("; "));
    let floors = config
        .dtypes
        .iter()
        .map(|&dtype| {
            let bytes = config.weight_bytes_per_token(dtype);
            BandwidthFloor {
                dtype,
                bytes_per_token: bytes,
                floor_tokens_per_second: probe.copy_gbs * 1e9 / bytes,
            }
        })
        .collect();
    Ok(DecodeBenchReport {
        date,
        cpu: crate::machine::cpu_name(),
        cores: crate::machine::logical_cores(),
        simd: sparsity_kernels::simd_level().name().into(),
        command: String::new(),
        git_revision: git_revision(),
        config: config.clone(),
        threads: probe.threads,
        copy_gbs: probe.copy_gbs,
        read_gbs: probe.read_gbs,
        floors,
        rows,
        peer_note,
    })
}

fn run_peer(
    peer: &Peer,
    model_dir: &Path,
    prompt: &Path,
    dtype: WeightDtype,
    config: &DecodeBenchConfig,
    threads: usize,
) -> Result<PeerOutput> {
    let out = Command::new(&peer.python)
        .arg(&peer.script)
        .arg("--model")
        .arg(model_dir)
        .arg("--prompt")
        .arg(prompt)
        .arg("--dtype")
        .arg(match dtype {
            WeightDtype::F32 => "f32",
            WeightDtype::Bf16 => "bf16",
            WeightDtype::F16 => "f16",
        })
        .arg("--new-tokens")
        .arg(config.new_tokens.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .args(&peer.extra_args)
        .env("OMP_NUM_THREADS", threads.to_string())
        .output()
        .with_step(|| format!("running {}", peer.script.display()))?;
    if !out.status.success() {
        return Err(ExperimentError::invalid(
            "--python",
            format!(
                "{} failed: {}",
                peer.script.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line)
        .with_step(|| format!("reading the output of {}", peer.script.display()))
}

impl DecodeBenchReport {
    /// The generated block of docs/benchmarks.md: where the figures come from (file, command,
    /// date, revision, machine), the [`DecodeBenchReport::table`] and the peer note.
    pub fn doc_block(&self, json_path: &str) -> String {
        let c = &self.config;
        let mut s = format!(
            "Generated from [`{json_path}`]({link}) by `{command}` on {date} (revision {rev}): \
             {cpu}, {threads} threads for every engine, STREAM copy {copy:.1} GB/s, read \
             {read:.1} GB/s. Model: {layers} layers, hidden {hidden}, intermediate {inter}, {heads} \
             heads / {kv} key-value heads, vocabulary {vocab}, random weights (seed {seed}); a \
             {prompt}-token prompt, then {new} greedy tokens. Our GEMV kernels ran with {simd}. \
             Rounds: {rounds} (each: ours at every level, then each peer); a row shows its fastest \
             round and the spread, fastest / slowest (– where the run predates rounds), and is \
             marked unreliable when the spread exceeds {max_spread}× or other processes used more \
             than a tenth of the cores during any of its rounds ({load}).\n\n",
            link = json_path.trim_start_matches("docs/"),
            command = if self.command.is_empty() {
                "cargo xtask decode-bench"
            } else {
                &self.command
            },
            date = if self.date.is_empty() {
                "an unrecorded date"
            } else {
                &self.date
            },
            rev = self.git_revision,
            cpu = if self.cpu.is_empty() {
                "unrecorded CPU"
            } else {
                &self.cpu
            },
            threads = self.threads,
            copy = self.copy_gbs,
            read = self.read_gbs,
            layers = c.model.num_hidden_layers,
            hidden = c.model.hidden_size,
            inter = c.model.intermediate_size,
            heads = c.model.num_attention_heads,
            kv = c.model.kv_heads(),
            vocab = c.model.vocab_size,
            seed = c.seed,
            prompt = c.prompt_len,
            new = c.new_tokens,
            rounds = c.rounds,
            simd = if self.simd.is_empty() {
                "an unrecorded SIMD level (before run-time dispatch: baseline SSE2)".to_string()
            } else {
                format!("`{}`", self.simd)
            },
            max_spread = MAX_SPREAD,
            load = match (
                self.rows
                    .iter()
                    .filter_map(|r| r.other_cpus_max)
                    .reduce(f64::max),
                self.rows.iter().filter_map(|r| r.load_max).reduce(f64::max),
            ) {
                (Some(o), Some(l)) => format!(
                    "at most {o:.2} CPUs used by other processes; highest 1-minute load average \
                     {l:.2}, the engines' own threads included"
                ),
                (None, Some(l)) => format!(
                    "other processes' CPU time not recorded; highest 1-minute load average {l:.2}"
                ),
                _ => "neither recorded in this run".into(),
            },
        );
        s.push_str(&self.table());
        if let Some(note) = &self.peer_note {
            s.push_str(&format!("\nNote: {note}\n"));
        }
        s.push_str("\nGoals of issue #18, from the rows above (ratios within this run):\n\n");
        s.push_str(&self.goals_table());
        s
    }

    /// Issue #18's goals per dtype, each measured on this run's rows: our dense decoder ≥ 1.2×
    /// transformers' `generate`, our decoder at 50 % activation sparsity ≥ 1.6× our dense one, and
    /// our dense decoder within 1.3× of the bandwidth floor. A goal whose rows are missing is
    /// "not measured".
    pub fn goals_table(&self) -> String {
        let mut s =
            String::from("| goal | dtype | measured | target | verdict |\n|---|---|---|---|---|\n");
        let tps = |engine: &str, dtype: WeightDtype, sparsity: Option<f64>| {
            self.rows
                .iter()
                .find(|r| {
                    r.engine == engine
                        && r.dtype == dtype
                        && match (r.sparsity, sparsity) {
                            (None, None) => true,
                            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                            _ => false,
                        }
                })
                .map(|r| r.decode_tokens_per_second)
        };
        let verdict = |ok: bool| if ok { "**met**" } else { "**not met**" };
        for f in &self.floors {
            let d = f.dtype;
            let dense = tps("ours", d, None);
            let mut line =
                |goal: &str, measured: Option<f64>, target: &str, ok: fn(f64) -> bool| {
                    s.push_str(&format!(
                        "| {goal} | {d:?} | {} | {target} | {} |\n",
                        measured.map_or("–".to_string(), |m| format!("{m:.2}×")),
                        measured.map_or("not measured", |m| verdict(ok(m)))
                    ));
                };
            line(
                "our dense ÷ transformers' `generate`",
                dense.zip(tps("transformers", d, None)).map(|(a, b)| a / b),
                "≥ 1.2×",
                |m| m >= 1.2,
            );
            line(
                "our 50 % ÷ our dense",
                tps("ours", d, Some(0.5)).zip(dense).map(|(a, b)| a / b),
                "≥ 1.6×",
                |m| m >= 1.6,
            );
            line(
                "bandwidth floor ÷ our dense",
                dense.map(|a| f.floor_tokens_per_second / a),
                "≤ 1.3×",
                |m| m <= 1.3,
            );
        }
        s
    }

    /// The Markdown table: tokens/s, ratios to our dense decoder and to transformers, and the
    /// bandwidth floor, per dtype.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| dtype | engine | activation sparsity (target / achieved) | prefill s | decode tok/s | spread | vs our dense | vs transformers | % of bandwidth floor | same tokens as our dense |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for f in &self.floors {
            // rows of the same weight width (llama.cpp's f16 rows sit with bf16)
            let rows: Vec<&DecodeBenchRow> = self
                .rows
                .iter()
                .filter(|r| element_bytes(r.dtype) == element_bytes(f.dtype))
                .collect();
            let dense = rows
                .iter()
                .find(|r| r.engine == "ours" && r.sparsity.is_none())
                .copied();
            let peer = rows.iter().find(|r| r.engine == "transformers").copied();
            for r in &rows {
                let ratio = |base: Option<&DecodeBenchRow>| {
                    base.map_or("–".to_string(), |b| {
                        format!(
                            "{:.2}×",
                            r.decode_tokens_per_second / b.decode_tokens_per_second
                        )
                    })
                };
                let same = dense.map_or("–".to_string(), |d| {
                    let n = d
                        .generated
                        .iter()
                        .zip(&r.generated)
                        .take_while(|(a, b)| a == b)
                        .count();
                    format!("{n}/{}", d.generated.len())
                });
                let level = match (r.sparsity, r.achieved_sparsity) {
                    (Some(t), Some(a)) => format!("{:.0} % / {:.1} %", 100.0 * t, 100.0 * a),
                    _ => "dense".into(),
                };
                s.push_str(&format!(
                    "| {:?} | {} | {} | {:.2} | {:.3} | {} | {} | {} | {:.0} % | {} |\n",
                    r.dtype,
                    r.engine,
                    level,
                    r.prefill_seconds,
                    r.decode_tokens_per_second,
                    match (r.spread(), r.unreliable(self.cores)) {
                        (None, _) => "–".to_string(),
                        (Some(x), None) => format!("{x:.2}"),
                        (Some(x), Some(why)) => format!("{x:.2} **unreliable**: {why}"),
                    },
                    ratio(dense),
                    ratio(peer),
                    100.0 * r.decode_tokens_per_second / f.floor_tokens_per_second,
                    same,
                ));
            }
            s.push_str(&format!(
                "| {:?} | bandwidth floor | {:.2} GB/token at {:.1} GB/s copy | | {:.3} | | | | 100 % | |\n",
                f.dtype,
                f.bytes_per_token / 1e9,
                self.copy_gbs,
                f.floor_tokens_per_second
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(engine: &str, dtype: WeightDtype, sparsity: Option<f64>, tps: f64) -> DecodeBenchRow {
        DecodeBenchRow {
            engine: engine.into(),
            dtype,
            sparsity,
            achieved_sparsity: sparsity,
            prefill_seconds: 1.0,
            decode_tokens_per_second: tps,
            generated: vec![1, 2, 3],
            rounds_tokens_per_second: vec![tps],
            load_max: Some(0.5),
            other_cpus_max: Some(0.01),
        }
    }

    fn report() -> DecodeBenchReport {
        DecodeBenchReport {
            git_revision: "abc".into(),
            config: DecodeBenchConfig::tinyllama(),
            threads: 2,
            copy_gbs: 30.0,
            read_gbs: 31.0,
            floors: vec![
                BandwidthFloor {
                    dtype: WeightDtype::F32,
                    bytes_per_token: 4e9,
                    floor_tokens_per_second: 7.5,
                },
                BandwidthFloor {
                    dtype: WeightDtype::Bf16,
                    bytes_per_token: 2e9,
                    floor_tokens_per_second: 15.0,
                },
            ],
            rows: vec![
                row("ours", WeightDtype::F32, None, 6.0),
                row("ours", WeightDtype::F32, Some(0.5), 9.0),
                row("transformers", WeightDtype::F32, None, 4.0),
                row("ours", WeightDtype::Bf16, None, 6.0),
                row("ours", WeightDtype::Bf16, Some(0.5), 10.2),
            ],
            peer_note: None,
            date: "2026-12-04 13:00 UTC".into(),
            cpu: "test CPU, 2 logical cores".into(),
            command: "cargo xtask decode-bench --threads 2".into(),
            cores: 2,
            simd: "avx512".into(),
        }
    }

    #[test]
    fn goals_are_the_ratios_of_the_rows() {
        let g = report().goals_table();
        // f32: 6 / 4 = 1.50 ≥ 1.2; 9 / 6 = 1.50 < 1.6; 7.5 / 6 = 1.25 ≤ 1.3
        assert!(
            g.contains("| our dense ÷ transformers' `generate` | F32 | 1.50× | ≥ 1.2× | **met** |"),
            "{g}"
        );
        assert!(
            g.contains("| our 50 % ÷ our dense | F32 | 1.50× | ≥ 1.6× | **not met** |"),
            "{g}"
        );
        assert!(
            g.contains("| bandwidth floor ÷ our dense | F32 | 1.25× | ≤ 1.3× | **met** |"),
            "{g}"
        );
        // bf16: no transformers row; 10.2 / 6 = 1.70; 15 / 6 = 2.50
        assert!(
            g.contains(
                "| our dense ÷ transformers' `generate` | Bf16 | – | ≥ 1.2× | not measured |"
            ),
            "{g}"
        );
        assert!(
            g.contains("| our 50 % ÷ our dense | Bf16 | 1.70× | ≥ 1.6× | **met** |"),
            "{g}"
        );
        assert!(
            g.contains("| bandwidth floor ÷ our dense | Bf16 | 2.50× | ≤ 1.3× | **not met** |"),
            "{g}"
        );
    }

    #[test]
    fn rounds_keep_the_fastest_and_their_spread() {
        let mut r = row("ours", WeightDtype::F32, None, 5.0);
        let round = |prefill: f64, tps: f64, other: Option<f64>| DecodeBenchRow {
            prefill_seconds: prefill,
            load_max: Some(2.5),
            other_cpus_max: other,
            ..row("ours", WeightDtype::F32, None, tps)
        };
        r.add_round(&round(0.5, 8.0, Some(0.3)));
        r.add_round(&round(2.0, 4.0, None));
        assert_eq!(r.decode_tokens_per_second, 8.0);
        assert_eq!(r.prefill_seconds, 0.5);
        assert_eq!(r.rounds_tokens_per_second, vec![5.0, 8.0, 4.0]);
        assert_eq!(r.spread(), Some(2.0));
        assert_eq!((r.load_max, r.other_cpus_max), (Some(2.5), Some(0.3)));
        // spread 2 > 1.3 and 0.3 other CPUs > 0.2 (2 cores): both named; on 4 cores (limit 0.4)
        // only the spread; a load average above the cores alone is no verdict
        let why = r.unreliable(2).unwrap_or_default();
        assert!(
            why.contains("spread 2.00×") && why.contains("other processes used 0.30 CPUs > 0.2"),
            "{why}"
        );
        let why = r.unreliable(4).unwrap_or_default();
        assert!(!why.contains("other"), "{why}");
        let calm = DecodeBenchRow {
            load_max: Some(2.3),
            ..row("ours", WeightDtype::F32, None, 5.0)
        };
        assert_eq!(calm.unreliable(2), None);
        let mut marked = report();
        marked.rows[0] = r.clone();
        assert!(
            marked.table().contains(
                "| 2.00 **unreliable**: spread 2.00× > 1.3×; other processes used 0.30 CPUs > 0.2 |"
            ),
            "{}",
            marked.table()
        );
        assert!(!report().table().contains("unreliable"));
        // JSON from before rounds: no spread, one round
        let old = r#"{"engine":"ours","dtype":"f32","sparsity":null,"achieved_sparsity":null,"prefill_seconds":1.0,"decode_tokens_per_second":3.0,"generated":[]}"#;
        let back: DecodeBenchRow = serde_json::from_str(old).unwrap();
        assert_eq!(back.spread(), None);
        let mut config = serde_json::to_value(DecodeBenchConfig::tinyllama()).unwrap();
        config.as_object_mut().unwrap().remove("rounds");
        let config: DecodeBenchConfig = serde_json::from_value(config).unwrap();
        assert_eq!(config.rounds, 1);
    }

    #[test]
    fn the_doc_block_names_its_source_and_survives_json() {
        let r = report();
        let json = serde_json::to_string(&r).unwrap_or_default();
        let back: DecodeBenchReport = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, r);
        let block = back.doc_block("docs/results/bench/decode_bench.json");
        assert!(block.starts_with("Generated from [`docs/results/bench/decode_bench.json`](results/bench/decode_bench.json) by `cargo xtask decode-bench --threads 2` on 2026-12-04 13:00 UTC (revision abc): test CPU"), "{block}");
        assert!(block.contains(&r.table()));
        assert!(block.contains(&r.goals_table()));
    }
}
