//! `cargo xtask prune`: sequential whole-model pruning of a GPT-2 or Mamba directory (or the
//! built-in demo models `demo-gpt2` / `demo-mamba`) with magnitude, Wanda, the Wanda variant or
//! SparseGPT.
//!
//! Calibration: the texts of `--calib-texts` are tokenised, joined with a blank line and cut into
//! `--nsamples` windows of `--seq-len` tokens at seeded random starts (the reference's C4
//! sampler). Perplexity before and after is measured on `--eval-texts`, or, without it, on the
//! last 10 % of the calibration texts, which are then left out of calibration. Writes the pruned
//! model as a Hugging Face directory (`config.json`, `model.safetensors`, `tokenizer.json`), its
//! masks (`masks.safetensors`, 1 = pruned, in the layout of each tensor in `model.safetensors`),
//! `pruning.json` and `recon_error.png`, all into a temporary directory renamed to `--out`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sparsity_models::text::{TextTokenizer, read_texts};
use sparsity_models::{CausalLm, cpu_device};
use sparsity_pruning::Precision;
use sparsity_pruning::model::{ModelPruneOptions, calibration_windows, prune_model, save_pruned};

use super::prune_layer::MethodArg;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory, hub id, or `demo-gpt2` / `demo-mamba` (the built-in demo models).
    #[arg(long)]
    pub model: String,
    /// Pruning method.
    #[arg(long, value_enum)]
    pub method: MethodArg,
    /// Unstructured sparsity ratio in [0, 1).
    #[arg(long, required_unless_present = "nm")]
    pub sparsity: Option<f64>,
    /// N:M pattern, e.g. 2:4.
    #[arg(long)]
    pub nm: Option<String>,
    /// Layer groups, comma separated: attention, mlp (GPT-2); in_proj, x_proj, dt_proj, out_proj
    /// (Mamba); a group the model lacks is an error listing its groups. Default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Calibration texts (.txt: one text per non-empty line; .jsonl: a `text` field per line).
    /// Default for the demo models: the demo corpus' training texts.
    #[arg(long)]
    pub calib_texts: Option<PathBuf>,
    /// Held-out texts for perplexity before/after (default: the last 10 % of the calibration
    /// texts; for the demo models, the corpus' held-out split).
    #[arg(long)]
    pub eval_texts: Option<PathBuf>,
    /// Number of calibration windows (default 128; 64 for the demo models).
    #[arg(long)]
    pub nsamples: Option<usize>,
    /// Calibration window length in tokens (default 2048, capped by the model's positions; 64
    /// for the demo models).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Seed of the window starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Calibration sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// SparseGPT column block size.
    #[arg(long, default_value_t = 128)]
    pub blocksize: usize,
    /// SparseGPT damping as a fraction of mean(diag H).
    #[arg(long, default_value_t = 0.01)]
    pub percdamp: f64,
    /// Retries with 10x damping when a Hessian is not positive definite.
    #[arg(long, default_value_t = 4)]
    pub max_damp_retries: usize,
    /// Accumulate SparseGPT's Hessian in f64 (the reference: f32).
    #[arg(long)]
    pub hessian_f64: bool,
    /// Skip the per-layer reconstruction errors (saves one f64 Gram matrix per layer).
    #[arg(long)]
    pub no_recon_error: bool,
    /// Output directory (replaced if it exists; must differ from the model directory).
    #[arg(long)]
    pub out: PathBuf,
    /// Demo model cache directory (default: target/sparsity-lab-cache/demo).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let device = cpu_device();
    let (method, pattern) = super::prune_layer::method_and_pattern(
        args.method,
        args.nm.as_deref(),
        args.sparsity,
        args.blocksize,
        args.percdamp,
    )?;

    // the model, its texts
    let is_demo = matches!(args.model.as_str(), "demo-gpt2" | "demo-mamba");
    let (dir, default_calib, default_eval) = if is_demo {
        let demo = crate::util::demo_models(args.cache.as_deref())?;
        let (train, held_out) = (demo.train_texts(), demo.held_out_texts());
        let dir = if args.model == "demo-gpt2" {
            demo.gpt2_dir.clone()
        } else {
            demo.mamba_dir.clone()
        };
        (dir, Some(train), Some(held_out))
    } else {
        let dir = sparsity_models::hub::resolve_model_dir(&args.model)
            .with_context(|| format!("resolving model `{}`", args.model))?;
        (dir, None, None)
    };
    if args.out.exists()
        && let (Ok(a), Ok(b)) = (args.out.canonicalize(), dir.canonicalize())
        && a == b
    {
        bail!(
            "--out {} is the model directory itself; choose another",
            args.out.display()
        );
    }
    let mut model =
        CausalLm::load_dir(&dir, &device).with_context(|| format!("loading {}", dir.display()))?;
    let tokenizer = TextTokenizer::from_model_dir(&dir)?;

    let mut calib_texts = match (&args.calib_texts, default_calib) {
        (Some(p), _) => read_texts(p).with_context(|| format!("reading {}", p.display()))?,
        (None, Some(t)) => t,
        (None, None) => bail!("--calib-texts is required with a model other than the demo ones"),
    };
    let eval_texts = match (&args.eval_texts, default_eval) {
        (Some(p), _) => read_texts(p).with_context(|| format!("reading {}", p.display()))?,
        (None, Some(t)) => t,
        (None, None) => {
            if calib_texts.len() < 2 {
                bail!(
                    "holding out 10 % of the calibration texts for perplexity needs at least 2 \
                     texts (got {}); give --eval-texts",
                    calib_texts.len()
                );
            }
            let k = (calib_texts.len() / 10).max(1);
            calib_texts.split_off(calib_texts.len() - k)
        }
    };
    let stream: Vec<u32> = tokenizer.encode(&calib_texts.join("\n\n"))?;
    let max_pos = model.max_positions();
    let seq_len = match args.seq_len {
        Some(l) => l,
        None if is_demo => 64,
        None => max_pos.map_or(2048, |m| m.min(2048)),
    };
    let nsamples = args.nsamples.unwrap_or(if is_demo { 64 } else { 128 });
    let calib = calibration_windows(&stream, seq_len, nsamples, args.seed)
        .context("cutting calibration windows (try a smaller --seq-len or more texts)")?;
    let eval: Vec<Vec<u32>> = eval_texts
        .iter()
        .map(|t| tokenizer.encode(t))
        .collect::<Result<_, _>>()?;
    // windows of at most the model's positions
    let eval: Vec<Vec<u32>> = eval
        .into_iter()
        .flat_map(|s| {
            let w = max_pos.unwrap_or(s.len().max(1)).max(1);
            s.chunks(w).map(<[u32]>::to_vec).collect::<Vec<_>>()
        })
        .filter(|s| s.len() >= 2)
        .collect();

    let options = ModelPruneOptions {
        groups: args.layers.iter().map(|s| s.trim().to_string()).collect(),
        batch_size: args.batch_size,
        hessian_precision: if args.hessian_f64 {
            Precision::F64
        } else {
            Precision::F32
        },
        max_damp_retries: Some(args.max_damp_retries),
        recon_error: !args.no_recon_error,
        ..ModelPruneOptions::new(method, pattern)
    };
    tracing::info!(
        model = %dir.display(), method = method.name(), %pattern, nsamples, seq_len,
        eval_sequences = eval.len(), "pruning"
    );
    let (report, masks) = prune_model(&mut model, &calib, &eval, &options, &device)
        .with_context(|| format!("pruning {}", dir.display()))?;
    let tok = dir.join("tokenizer.json");
    save_pruned(
        &model,
        &report,
        &masks,
        tok.is_file().then_some(tok.as_path()),
        &args.out,
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    let plot = args.out.join("recon_error.png");
    if let Err(e) = sparsity_pruning::plot::plot_model_pruning(&plot, &report) {
        tracing::warn!(error = %e, "the reconstruction-error plot was not written");
    }
    let mut table = String::from("layer | sparsity | rel. recon. error\n");
    for l in &report.layers {
        table.push_str(&format!(
            "{} | {:.4} | {}\n",
            l.target.name,
            l.report.sparsity,
            l.rel_recon_error
                .map_or("-".to_string(), |e| format!("{e:.4e}"))
        ));
    }
    eprint!("{table}");
    if let (Some(b), Some(a)) = (&report.perplexity_before, &report.perplexity_after) {
        eprintln!(
            "held-out perplexity {:.3} -> {:.3} ({} tokens)",
            b.perplexity, a.perplexity, a.tokens
        );
    }
    eprintln!(
        "overall sparsity {:.4}; pruned model, masks and pruning.json in {}",
        report.overall_sparsity,
        args.out.display()
    );
    Ok(())
}
