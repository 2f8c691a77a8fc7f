//! `cargo xtask cluster`: Hamming neighbourhood clustering of weight masks (or activation
//! patterns), separation ratio, MMM block coherence and plots.
//!
//! For every `--tensor` in `--input` (a safetensors file): binarise (features = columns by
//! default), pick a reference feature (`--reference`, or drawn with `--seed`), take its
//! `--neighbors` nearest features by Hamming distance, cluster reference + neighbours for every
//! `--k`, and measure exact within/between distances, the separation ratio and MMM coherence for
//! every `--block` size (all in `sparsity_clustering::report`). Writes `OUT/clusters.json`
//! (schema in docs/clustering.md), the plots under `OUT/<tensor>/`, the separation heat map
//! `OUT/separation_heatmap.png` when there is more than one (tensor, k) cell or method, and
//! appends one row per number to the Parquet results store.

use std::path::PathBuf;

use sparsity_clustering::metrics::MetricsChoice;
use sparsity_clustering::mmm::RaggedBlock;
use sparsity_clustering::procedure::{ClusterMethod, NeighbourhoodParams, ReferenceChoice};
use sparsity_clustering::report::TensorClusterParams;
use sparsity_clustering::{Binarize, FeatureAxis};
use sparsity_experiments::cluster::{ClusterRun, run_cluster};

fn parse_binarize(s: &str) -> Result<Binarize, String> {
    s.parse::<Binarize>().map_err(|e| e.to_string())
}

/// Arguments of `cargo xtask cluster`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input safetensors file.
    #[arg(long)]
    pub input: PathBuf,
    /// 2-D tensor(s) in the file (repeat, or comma separated), e.g. `model.layers.1.mlp.down_proj.weight`.
    #[arg(long, required = true, value_delimiter = ',')]
    pub tensor: Vec<String>,
    /// Binarisation: `nonzero` (mask of a pruned weight), `positive` (the original's `> 0`,
    /// drops negative weights), `abs-gt:T` (`|x| > T`).
    #[arg(long, default_value = "nonzero", value_parser = parse_binarize)]
    pub binarize: Binarize,
    /// Which axis holds the features: `columns` (`W [out, in]` → `in` features of `out` bits;
    /// the original) or `rows`.
    #[arg(long, default_value = "columns")]
    pub features: FeatureAxis,
    /// Nearest neighbours taken besides the reference.
    #[arg(long, default_value_t = 128)]
    pub neighbors: usize,
    /// Cluster counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8,16")]
    pub k: Vec<usize>,
    /// Reference feature index (otherwise drawn with `--seed`).
    #[arg(long, conflicts_with = "seed")]
    pub reference: Option<usize>,
    /// Seed of the reference draw (default 42); also the clustering and sampling seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// MMM block sizes in bits (rows), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128")]
    pub block: Vec<usize>,
    /// Ragged last MMM block: `include` (coherent when its bits are zero) or `drop`.
    #[arg(long, default_value = "include")]
    pub ragged: RaggedBlock,
    /// Main clustering method: `hamming-kmeans`, `linfa-kmeans` or `ward`.
    #[arg(long, default_value = "hamming-kmeans")]
    pub method: ClusterMethod,
    /// Restarts of the k-means methods.
    #[arg(long, default_value_t = 10)]
    pub n_init: usize,
    /// Within/between definitions: `exact` (all pairs, pooled) or `legacy` (the original's).
    #[arg(long, default_value = "exact")]
    pub metrics: MetricsChoice,
    /// Also report the original's per-row MMM coherence of groups of N cluster-ordered
    /// features (`--legacy-mmm` alone: N = 8, the original's).
    #[arg(long, num_args = 0..=1, default_missing_value = "8")]
    pub legacy_mmm: Option<usize>,
    /// Do not cluster the neighbourhood with the other two methods.
    #[arg(long)]
    pub no_compare: bool,
    /// Also run the multi-execution over this many distinct seeded references.
    #[arg(long)]
    pub executions: Option<usize>,
    /// Skip the plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Results store directory.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Model label for the results store (default: the input file stem).
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub budget: crate::util::BudgetArgs,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or(42);
    let reference = args
        .reference
        .map_or(ReferenceChoice::Seeded(seed), ReferenceChoice::Index);
    let params = TensorClusterParams {
        binarize: args.binarize,
        feature_axis: args.features,
        neighbourhood: NeighbourhoodParams {
            reference,
            n_neighbours: args.neighbors,
            ks: args.k,
            method: args.method,
            seed,
            n_init: args.n_init,
            block_sizes: args.block,
            ragged: args.ragged,
            metrics: args.metrics.params(seed),
            legacy_mmm_group: args.legacy_mmm,
        },
        compare_methods: !args.no_compare,
        executions: args.executions,
    };
    let run = ClusterRun {
        input: args.input,
        tensors: args.tensor,
        params,
        plots: !args.no_plots,
        out: args.out,
        results_dir: args.results_dir,
        model: args.model,
        max_memory: args.budget.max_memory,
    };
    if args.budget.dry_run {
        println!("{}", run.memory_estimate()?);
        return Ok(());
    }
    let out = run_cluster(&run)?;
    println!(
        "wrote {} and the plots beside it; results store rows: {}",
        out.json.display(),
        out.results.display()
    );
    print!("{}", out.summary);
    Ok(())
}
