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

use anyhow::Context;
use clap::ValueEnum;
use sparsity_clustering::metrics::ClusterMetricsParams;
use sparsity_clustering::mmm::RaggedBlock;
use sparsity_clustering::procedure::{ClusterMethod, NeighbourhoodParams, ReferenceChoice};
use sparsity_clustering::report::{
    ClusterReport, TensorClusterParams, TensorClusters, cluster_tensor, method_name,
    separation_heatmap_of, tensor_slug,
};
use sparsity_clustering::{Binarize, FeatureAxis};

use sparsity_experiments::results::{ResultRow, append_rows, new_run_id, now_us};

/// Feature axis on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FeaturesArg {
    /// Columns are features, rows are bits (`W [out, in]` → `in` features; the original).
    Columns,
    /// Rows are features.
    Rows,
}

/// Clustering method on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MethodArg {
    /// Hamming k-means (majority-vote centroids, k-means++ seeding).
    HammingKmeans,
    /// linfa's Euclidean k-means on the 0/1 floats (fractional centroids).
    LinfaKmeans,
    /// Ward agglomerative clustering cut at k clusters.
    Ward,
}

/// Ragged last MMM block on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RaggedArg {
    /// Count it; coherent when its existing bits are zero.
    Include,
    /// Ignore it.
    Drop,
}

/// Within/between definitions on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MetricsArg {
    /// Exact over all pairs, pooled within mean (singletons contribute no pair).
    Exact,
    /// The original's: unweighted within mean with singletons as 0, 50 sampled between pairs.
    Legacy,
}

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
    /// Which axis holds the features.
    #[arg(long, value_enum, default_value = "columns")]
    pub features: FeaturesArg,
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
    /// Ragged last MMM block.
    #[arg(long, value_enum, default_value = "include")]
    pub ragged: RaggedArg,
    /// Main clustering method.
    #[arg(long, value_enum, default_value = "hamming-kmeans")]
    pub method: MethodArg,
    /// Restarts of the k-means methods.
    #[arg(long, default_value_t = 10)]
    pub n_init: usize,
    /// Within/between definitions.
    #[arg(long, value_enum, default_value = "exact")]
    pub metrics: MetricsArg,
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
}

/// Builds the library parameters from the command line.
fn params(args: &Args) -> TensorClusterParams {
    let seed = args.seed.unwrap_or(42);
    TensorClusterParams {
        binarize: args.binarize,
        feature_axis: match args.features {
            FeaturesArg::Columns => FeatureAxis::Columns,
            FeaturesArg::Rows => FeatureAxis::Rows,
        },
        neighbourhood: NeighbourhoodParams {
            reference: match args.reference {
                Some(i) => ReferenceChoice::Index(i),
                None => ReferenceChoice::Seeded(seed),
            },
            n_neighbours: args.neighbors,
            ks: args.k.clone(),
            method: match args.method {
                MethodArg::HammingKmeans => ClusterMethod::HammingKMeans,
                MethodArg::LinfaKmeans => ClusterMethod::LinfaKMeans,
                MethodArg::Ward => ClusterMethod::Ward,
            },
            seed,
            n_init: args.n_init,
            block_sizes: args.block.clone(),
            ragged: match args.ragged {
                RaggedArg::Include => RaggedBlock::Include,
                RaggedArg::Drop => RaggedBlock::Drop,
            },
            metrics: match args.metrics {
                MetricsArg::Exact => ClusterMetricsParams::default(),
                MetricsArg::Legacy => ClusterMetricsParams::legacy(seed),
            },
            legacy_mmm_group: args.legacy_mmm,
        },
        compare_methods: !args.no_compare,
        executions: args.executions,
    }
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let params = params(&args);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating the output directory {}", args.out.display()))?;
    let mut report = ClusterReport::new(&args.input, &params, crate::util::git_revision());
    let pb = indicatif::ProgressBar::new(args.tensor.len() as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tensors {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for name in &args.tensor {
        pb.set_message(name.clone());
        let plot_dir = args.out.join(tensor_slug(name));
        let mut t = cluster_tensor(
            &args.input,
            name,
            &params,
            (!args.no_plots).then_some(plot_dir.as_path()),
        )
        .with_context(|| {
            format!(
                "clustering tensor `{name}` of {} ({} neighbours, k = {:?})",
                args.input.display(),
                args.neighbors,
                args.k
            )
        })?;
        let slug = tensor_slug(name);
        for p in t.plots.iter_mut() {
            *p = format!("{slug}/{p}");
        }
        report.tensors.push(t);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let cells: usize = report.tensors.iter().map(|t| t.per_k.len()).sum();
    let n_methods = report
        .tensors
        .first()
        .map_or(0, |t| t.separation_by_method.len());
    if !args.no_plots && (cells > 1 || n_methods > 1) {
        let name = "separation_heatmap.png";
        separation_heatmap_of(&report.tensors, &args.out.join(name))?;
        report.heatmap = Some(name.to_string());
    }
    let json = args.out.join("clusters.json");
    crate::util::write_json(&json, &report)?;

    let model = args.model.clone().unwrap_or_else(|| {
        args.input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into())
    });
    let parameters = serde_json::to_string(&serde_json::json!({
        "input": args.input.display().to_string(),
        "params": params,
    }))
    .context("serialising the run parameters")?;
    let rows = result_rows(&report.tensors, &model, &parameters);
    let path = append_rows(&args.results_dir, &rows).context("appending to the results store")?;
    tracing::info!(
        json = %json.display(),
        results = %path.display(),
        rows = rows.len(),
        "cluster analysis written"
    );
    println!(
        "wrote {} and plots in {}",
        json.display(),
        args.out.display()
    );
    print_summary(&report.tensors);
    Ok(())
}

/// Layer index from a tensor name: the first all-digit dot-separated component.
fn layer_of(tensor: &str) -> Option<i64> {
    tensor
        .split('.')
        .find(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
}

/// One row per defined number: `method` = `<clustering method>:k<k>` (or `neighbours`),
/// `metric` = the quantity. Undefined values (`None`) are left out.
fn result_rows(tensors: &[TensorClusters], model: &str, parameters: &str) -> Vec<ResultRow> {
    let run_id = new_run_id();
    let timestamp_us = now_us();
    let git_rev = crate::util::git_revision();
    let mut rows = Vec::new();
    for t in tensors {
        let mut push = |method: String, metric: String, value: Option<f64>| {
            if let Some(value) = value {
                rows.push(ResultRow {
                    run_id: run_id.clone(),
                    timestamp_us,
                    git_rev: git_rev.clone(),
                    command: "cluster".into(),
                    model: model.to_string(),
                    layer: layer_of(&t.tensor),
                    site: t.tensor.clone(),
                    method,
                    metric,
                    value,
                    parameters: parameters.to_string(),
                });
            }
        };
        let nd = &t.neighbour_distances;
        let n = nd.len() as f64;
        push("neighbours".into(), "density".into(), Some(t.density));
        push(
            "neighbours".into(),
            "reference".into(),
            Some(t.reference as f64),
        );
        push(
            "neighbours".into(),
            "distance_min".into(),
            nd.first().copied(),
        );
        push(
            "neighbours".into(),
            "distance_max".into(),
            nd.last().copied(),
        );
        push(
            "neighbours".into(),
            "distance_mean".into(),
            (n > 0.0).then(|| nd.iter().sum::<f64>() / n),
        );
        let main = method_name(t.method);
        for kr in &t.per_k {
            let m = format!("{main}:k{}", kr.k);
            let met = &kr.metrics;
            push(m.clone(), "separation_ratio".into(), met.separation_ratio);
            push(m.clone(), "within_mean".into(), met.within_mean);
            push(m.clone(), "within_std".into(), met.within_std);
            push(m.clone(), "between_mean".into(), met.between_mean);
            push(m.clone(), "between_std".into(), met.between_std);
            push(
                m.clone(),
                "singleton_clusters".into(),
                Some(met.singleton_clusters as f64),
            );
            let cm = &kr.centroid_metrics;
            push(
                m.clone(),
                "centroid_separation_ratio".into(),
                cm.separation_ratio,
            );
            push(m.clone(), "centroid_within".into(), Some(cm.within));
            push(m.clone(), "centroid_between".into(), cm.between);
            push(m.clone(), "inertia".into(), Some(cm.inertia));
            push(
                m.clone(),
                "largest_cluster".into(),
                kr.sizes.iter().max().map(|&s| s as f64),
            );
            for c in &kr.coherence {
                push(
                    m.clone(),
                    format!("mmm_coherence_b{}", c.block_size),
                    Some(c.weighted_mean),
                );
                push(
                    m.clone(),
                    format!("mmm_baseline_b{}", c.block_size),
                    Some(c.weighted_baseline),
                );
            }
            if let Some(l) = &kr.legacy_coherence {
                push(
                    m.clone(),
                    format!("mmm_legacy_coherence_g{}", l.group_size),
                    Some(l.mean_coherence),
                );
                push(
                    m.clone(),
                    format!("mmm_legacy_baseline_g{}", l.group_size),
                    Some(l.independence_baseline),
                );
            }
        }
        for s in t.separation_by_method.iter().skip(1) {
            for k in &s.per_k {
                push(
                    format!("{}:k{}", method_name(s.method), k.k),
                    "separation_ratio".into(),
                    k.separation_ratio,
                );
                push(
                    format!("{}:k{}", method_name(s.method), k.k),
                    format!("ari_vs_{main}"),
                    Some(k.ari_vs_main),
                );
            }
        }
        if let Some(me) = &t.multi_execution {
            for s in &me.per_k {
                let m = format!("{main}:k{}:multi", s.k);
                push(m.clone(), "separation_ratio_mean".into(), s.mean);
                push(m.clone(), "separation_ratio_std".into(), s.std);
                push(m.clone(), "separation_ratio_median".into(), s.median);
                push(m, "executions_undefined".into(), Some(s.n_undefined as f64));
            }
        }
    }
    rows
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.3}"))
}

fn print_summary(tensors: &[TensorClusters]) {
    for t in tensors {
        println!(
            "{}: {} features x {} bits, density {:.4}, reference {}, {} neighbours at distance {}..{}",
            t.tensor,
            t.n_features,
            t.n_bits,
            t.density,
            t.reference,
            t.neighbours.len(),
            fmt_opt(t.neighbour_distances.first().copied()),
            fmt_opt(t.neighbour_distances.last().copied()),
        );
        for kr in &t.per_k {
            let coh: Vec<String> = kr
                .coherence
                .iter()
                .map(|c| format!("B{}={:.3}", c.block_size, c.weighted_mean))
                .collect();
            println!(
                "  {} k={:>2}: separation {} (within {}, between {}; centroid variant {}), sizes {:?}, MMM {}",
                method_name(t.method),
                kr.k,
                fmt_opt(kr.metrics.separation_ratio),
                fmt_opt(kr.metrics.within_mean),
                fmt_opt(kr.metrics.between_mean),
                fmt_opt(kr.centroid_metrics.separation_ratio),
                kr.sizes,
                coh.join(" "),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn layer_from_tensor_name() {
        assert_eq!(layer_of("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(layer_of("w"), None);
    }

    /// End to end on a small planted mask: 2 tensors, JSON schema, plots, results rows.
    #[test]
    fn end_to_end_on_a_planted_mask() {
        let dir = tempfile::tempdir().unwrap();
        // W [out = 96, in = 60]: column j follows prototype j % 3 (rows 32p..32p+32 kept), with a
        // few flipped bits; a second tensor is its negation (same mask, all weights < 0).
        let w: Vec<f32> = (0..96 * 60)
            .map(|i| {
                let (r, c) = (i / 60, i % 60);
                let on = (r / 32 == c % 3) ^ ((r * 7 + c * 13) % 97 == 0);
                if on { 0.5 + (r % 5) as f32 } else { 0.0 }
            })
            .collect();
        let neg: Vec<f32> = w.iter().map(|x| -x).collect();
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (b1, b2) = (bytes(&w), bytes(&neg));
        let t1 = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![96, 60], &b1)
            .unwrap();
        let t2 = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![96, 60], &b2)
            .unwrap();
        let input = dir.path().join("mask.safetensors");
        safetensors::serialize_to_file(
            [
                ("model.layers.3.mlp.up_proj.weight", t1),
                ("model.layers.3.mlp.neg.weight", t2),
            ],
            None,
            &input,
        )
        .unwrap();
        let out = dir.path().join("out");
        let results = dir.path().join("results");
        let cli = Cli::try_parse_from([
            "cluster",
            "--input",
            input.to_str().unwrap(),
            "--tensor",
            "model.layers.3.mlp.up_proj.weight,model.layers.3.mlp.neg.weight",
            "--neighbors",
            "29",
            "--k",
            "3,4",
            "--reference",
            "0",
            "--block",
            "16,32,40",
            "--legacy-mmm",
            "--out",
            out.to_str().unwrap(),
            "--results-dir",
            results.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(cli.args.legacy_mmm, Some(8));
        run(cli.args).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("clusters.json")).unwrap()).unwrap();
        let report: ClusterReport = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(report.tensors.len(), 2);
        let t = &report.tensors[0];
        assert_eq!((t.n_features, t.n_bits, t.reference), (60, 96, 0));
        assert_eq!(t.neighbours.len(), 29);
        // The 19 other members of prototype 0 are the nearest.
        assert!(t.neighbours[..19].iter().all(|j| j % 3 == 0));
        let k3 = &t.per_k[0];
        assert_eq!(k3.k, 3);
        assert!(k3.metrics.separation_ratio.unwrap() > 5.0);
        assert!(k3.centroid_metrics.separation_ratio.unwrap() > 1.0);
        assert_eq!(k3.coherence.len(), 3);
        assert_eq!(k3.legacy_coherence.as_ref().unwrap().group_size, 8);
        assert_eq!(t.separation_by_method.len(), 3);
        // On this planted mask all three methods find the same 3 clusters.
        for m in &t.separation_by_method {
            assert_eq!(m.per_k[0].ari_vs_main, 1.0, "{:?}", m.method);
        }
        // Default rule `nonzero` keeps negative weights: the negated tensor has the same mask.
        let n = &report.tensors[1];
        assert_eq!(n.neighbours, t.neighbours);
        assert_eq!(n.per_k[0].labels, k3.labels);
        assert_eq!(json["binarize"], "nonzero");
        for p in t.plots.iter().chain(&n.plots) {
            let png = std::fs::read(out.join(p)).unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{p}");
        }
        assert_eq!(t.plots.len(), 5);
        assert_eq!(report.heatmap.as_deref(), Some("separation_heatmap.png"));
        assert!(out.join("separation_heatmap.png").is_file());
        let parquet: Vec<_> = std::fs::read_dir(&results).unwrap().collect();
        assert_eq!(parquet.len(), 1);
        // `positive` (the original's `> 0`) drops every negative weight: the negated tensor's
        // mask becomes all zero, every distance 0, and the separation ratio undefined (null).
        let out2 = dir.path().join("out2");
        let cli = Cli::try_parse_from([
            "cluster",
            "--input",
            input.to_str().unwrap(),
            "--tensor",
            "model.layers.3.mlp.neg.weight",
            "--binarize",
            "positive",
            "--k",
            "2",
            "--neighbors",
            "5",
            "--no-plots",
            "--no-compare",
            "--out",
            out2.to_str().unwrap(),
            "--results-dir",
            results.to_str().unwrap(),
        ])
        .unwrap();
        run(cli.args).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out2.join("clusters.json")).unwrap()).unwrap();
        assert_eq!(json["binarize"], "positive");
        assert_eq!(json["tensors"][0]["density"], 0.0);
        assert!(json["tensors"][0]["per_k"][0]["metrics"]["separation_ratio"].is_null());
        assert!(json["heatmap"].is_null());
        assert_eq!(std::fs::read_dir(&results).unwrap().count(), 2);
        assert!(
            Cli::try_parse_from([
                "cluster",
                "--input",
                "x",
                "--tensor",
                "t",
                "--out",
                "o",
                "--binarize",
                "gt:1"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "cluster",
                "--input",
                "x",
                "--tensor",
                "t",
                "--out",
                "o",
                "--reference",
                "1",
                "--seed",
                "2"
            ])
            .is_err()
        );
    }
}
