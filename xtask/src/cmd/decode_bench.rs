//! `cargo xtask decode-bench`: end-to-end batch-1 greedy decoding of a Llama-shaped model with
//! random weights at LLM size (TinyLlama-1.1B's shape), ours dense and TEAL-sparse against
//! transformers' `generate` on the same weights (`benches/peers/decode_peer.py`) in the same
//! run, with the memory-bandwidth floor. Prints the table, writes JSON and Markdown.

use std::path::PathBuf;

use anyhow::Context;
use sparsity_decoding::decode::WeightDtype;
use sparsity_experiments::decode_bench::{DecodeBenchConfig, Peer, run_decode_bench};

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Weight dtypes, comma separated: f32, bf16, f16.
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    dtypes: Vec<String>,
    /// Activation sparsities of the sparse decoder, comma separated, in (0, 1).
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.4,0.5,0.65")]
    sparsities: Vec<f64>,
    /// Prompt tokens.
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Generated tokens.
    #[arg(long, default_value_t = 128)]
    new_tokens: usize,
    /// Layers (22 = TinyLlama-1.1B; fewer for a quick look).
    #[arg(long, default_value_t = 22)]
    layers: usize,
    /// Seed of weights and prompts.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Interleaved rounds (ours at every level, then each peer, per round); rows report the
    /// fastest round and the spread.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Python with torch + transformers (benches/peers/requirements-torch.txt): also time
    /// transformers' `generate` on the same weights.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Python with llama-cpp-python + gguf (benches/peers/requirements-llamacpp.txt): also time
    /// llama.cpp on a GGUF of the same weights (f16 for the bf16 rows).
    #[arg(long)]
    llamacpp_python: Option<PathBuf>,
    /// Threads of every engine (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the model is saved for the peer (about 4.4 GB).
    #[arg(long, default_value = "target/decode-bench")]
    work_dir: PathBuf,
    /// Output directory (decode_bench.json, decode_bench.md).
    #[arg(long, default_value = "results/decode-bench")]
    out_dir: PathBuf,
    #[command(flatten)]
    budget: crate::util::BudgetArgs,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    crate::util::set_threads(args.threads)?;
    let mut config = DecodeBenchConfig::tinyllama();
    config.model.num_hidden_layers = args.layers;
    config.dtypes = args
        .dtypes
        .iter()
        .map(|d| d.parse::<WeightDtype>())
        .collect::<Result<_, _>>()
        .context("parsing --dtypes")?;
    config.sparsities = args.sparsities.clone();
    config.prompt_len = args.prompt_len;
    config.new_tokens = args.new_tokens;
    config.seed = args.seed;
    config.rounds = args.rounds;
    config.max_memory = args.budget.max_memory;
    let mut peers: Vec<Peer> = args
        .python
        .map(|python| Peer {
            name: "transformers".into(),
            python,
            script: PathBuf::from("benches/peers/decode_peer.py"),
            half_as_f16: false,
            extra_args: Vec::new(),
        })
        .into_iter()
        .collect();
    peers.extend(args.llamacpp_python.map(|python| Peer {
        name: "llama.cpp".into(),
        python,
        script: PathBuf::from("benches/peers/llamacpp_peer.py"),
        half_as_f16: true,
        extra_args: vec!["--gguf-dir".into(), args.work_dir.display().to_string()],
    }));
    if args.budget.dry_run {
        println!("{}", config.memory_estimate(peers.len()));
        return Ok(());
    }
    let device = sparsity_models::cpu_device();
    let mut report = run_decode_bench(&config, &peers, &args.work_dir, &device)?;
    report.command = std::iter::once("cargo xtask decode-bench".to_string())
        .chain(std::env::args().skip(2))
        .collect::<Vec<_>>()
        .join(" ");
    let table = report.table();
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    sparsity_experiments::write_json(&args.out_dir.join("decode_bench.json"), &report)?;
    sparsity_io::write_atomic(&args.out_dir.join("decode_bench.md"), table.as_bytes())
        .with_context(|| format!("writing {}", args.out_dir.display()))?;
    println!("{table}");
    if let Some(note) = &report.peer_note {
        println!("note: {note}");
    }
    println!("results in {}", args.out_dir.display());
    Ok(())
}
