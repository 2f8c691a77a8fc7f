//! The whole `cargo xtask cluster` analysis of one tensor, and the `clusters.json` schema.
//!
//! [`cluster_tensor`] loads a 2-D tensor from a safetensors file, binarises it
//! ([`crate::Binarize`], features = columns by default), and [`cluster_binary`] runs the
//! original study's procedure on it ([`crate::procedure::neighbourhood_clustering`]: reference +
//! nearest neighbours, clustering for every `k`, exact within/between distances and separation
//! ratio, MMM block coherence), optionally the same neighbourhood with the two other clustering
//! methods (separation ratio by method) and a multi-execution over seeded references, and draws
//! the plots: `spy.png` (the mask), `spy_gradient.png` (features by Hamming distance to the
//! reference), `spy_clusters_k{k}.png` (the neighbourhood in cluster order, red lines at cluster
//! boundaries) and `hamming_hist.png` (distances from the reference to every other feature).
//! [`separation_heatmap_of`] draws method × (tensor, k) separation ratios. [`ClusterReport`] is
//! the `clusters.json` document (see docs/clustering.md).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::binary::{Binarize, BinaryMatrix, FeatureAxis};
use crate::error::{ClusterError, Result};
use crate::hamming::kernel_name;
#[cfg(feature = "plots")]
use crate::hamming::one_vs_all;
use crate::metrics::adjusted_rand_index;
#[cfg(feature = "plots")]
use crate::ordering::{cluster_order, hamming_gradient};
#[cfg(feature = "plots")]
use crate::plot::{SpyPlotParams, hamming_histogram, separation_heatmap, spy_plot};
use crate::procedure::{
    ClusterMethod, KClustering, NeighbourhoodParams, ReferenceChoice, SeparationSummary,
    multi_execution, neighbourhood_clustering,
};

/// Options of [`cluster_tensor`] / [`cluster_binary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorClusterParams {
    /// How values become bits (default `nonzero`).
    pub binarize: Binarize,
    /// Which axis of the tensor holds the features (default columns).
    pub feature_axis: FeatureAxis,
    /// The neighbourhood procedure (reference, neighbours, ks, method, seeds, blocks, metrics).
    pub neighbourhood: NeighbourhoodParams,
    /// Also cluster the same neighbourhood with the two other methods (default true).
    pub compare_methods: bool,
    /// Also run a multi-execution over this many seeded references (default none).
    pub executions: Option<usize>,
}

impl Default for TensorClusterParams {
    fn default() -> Self {
        Self {
            binarize: Binarize::NonZero,
            feature_axis: FeatureAxis::Columns,
            neighbourhood: NeighbourhoodParams::default(),
            compare_methods: true,
            executions: None,
        }
    }
}

/// Separation ratio of one method for one `k`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KSeparation {
    /// Number of clusters.
    pub k: usize,
    /// `mean_between / mean_within` (`None` when undefined).
    pub separation_ratio: Option<f64>,
    /// Adjusted Rand index of this method's labels against the main method's for the same `k`
    /// (1.0 = the same partition).
    pub ari_vs_main: f64,
}

/// Separation ratios of one method over the `ks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSeparation {
    /// Clustering method.
    pub method: ClusterMethod,
    /// One entry per `k`, in the order of the `ks`.
    pub per_k: Vec<KSeparation>,
}

/// Summary of a multi-execution (the per-execution reports are not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiExecutionSummary {
    /// Seed of the reference stream.
    pub seed: u64,
    /// References drawn, in order, `[n_executions]`.
    pub references: Vec<usize>,
    /// Separation-ratio distribution per `k`.
    pub per_k: Vec<SeparationSummary>,
}

/// Everything measured on one tensor (one entry of `clusters.json`'s `tensors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorClusters {
    /// Tensor name in the safetensors file (or a label).
    pub tensor: String,
    /// Shape of the dense tensor, `[rows, cols]`.
    pub tensor_shape: [usize; 2],
    /// Number of features (binary vectors).
    pub n_features: usize,
    /// Bits per feature.
    pub n_bits: usize,
    /// Fraction of set bits in the whole binary matrix.
    pub density: f64,
    /// Reference feature index.
    pub reference: usize,
    /// Nearest neighbours of the reference, nearest first (ties by lower index), `[neighbors]`.
    pub neighbours: Vec<usize>,
    /// Raw Hamming counts of the neighbours to the reference, `[neighbors]`.
    pub neighbour_counts: Vec<u32>,
    /// Normalised Hamming distances of the neighbours to the reference, `[neighbors]`.
    pub neighbour_distances: Vec<f64>,
    /// The clustered features (reference, then the neighbours), `[1 + neighbors]`; the labels of
    /// `per_k` are in this order.
    pub subset: Vec<usize>,
    /// Main clustering method.
    pub method: ClusterMethod,
    /// Main method's clustering, metrics and MMM coherence per `k`.
    pub per_k: Vec<KClustering>,
    /// Separation ratio of every method that was run (the main one first).
    pub separation_by_method: Vec<MethodSeparation>,
    /// Multi-execution summary, when requested.
    pub multi_execution: Option<MultiExecutionSummary>,
    /// Plot files written for this tensor, relative to the output directory.
    pub plots: Vec<String>,
}

/// The `clusters.json` document written by `cargo xtask cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterReport {
    /// Always `"sparsity-clustering"`.
    pub tool: String,
    /// Git revision of the code (filled by the caller).
    pub git_revision: String,
    /// The safetensors file.
    pub input: PathBuf,
    /// Binarisation rule as given on the command line (`nonzero`, `positive`, `abs-gt:T`).
    pub binarize: String,
    /// The options used.
    pub params: TensorClusterParams,
    /// XOR + popcount kernel selected on this CPU.
    pub popcount_kernel: String,
    /// One entry per tensor, in the order given.
    pub tensors: Vec<TensorClusters>,
    /// Separation heat map (relative to the output directory), when one was drawn.
    pub heatmap: Option<String>,
}

impl ClusterReport {
    /// An empty report for `input` with `params` (tensors appended by the caller).
    pub fn new(input: &Path, params: &TensorClusterParams, git_revision: String) -> Self {
        Self {
            tool: "sparsity-clustering".into(),
            git_revision,
            input: input.to_path_buf(),
            binarize: params.binarize.to_string(),
            params: params.clone(),
            popcount_kernel: kernel_name().into(),
            tensors: Vec::new(),
            heatmap: None,
        }
    }
}

/// A file-system-safe directory name for a tensor (`model.layers.1.mlp.up_proj.weight` →
/// `model.layers.1.mlp.up_proj.weight`; other characters become `_`).
pub fn tensor_slug(tensor: &str) -> String {
    let s: String = tensor
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_matches('.') {
        "" => "tensor".into(),
        t => t.to_string(),
    }
}

/// A short label for plots: `model.layers.1.mlp.up_proj.weight` → `L1 up_proj`.
pub fn short_label(tensor: &str) -> String {
    let parts: Vec<&str> = tensor
        .split('.')
        .filter(|p| !p.is_empty() && *p != "weight")
        .collect();
    let layer = parts.iter().find(|p| p.chars().all(|c| c.is_ascii_digit()));
    let last = parts
        .iter()
        .rev()
        .find(|p| !p.chars().all(|c| c.is_ascii_digit()));
    match (layer, last) {
        (Some(l), Some(n)) => format!("L{l} {n}"),
        (None, Some(n)) => (*n).to_string(),
        _ => tensor.to_string(),
    }
}

/// Loads `tensor` from `input`, binarises it and runs [`cluster_binary`].
pub fn cluster_tensor(
    input: &Path,
    tensor: &str,
    params: &TensorClusterParams,
    plot_dir: Option<&Path>,
) -> Result<TensorClusters> {
    let dense = crate::io::load_matrix(input, tensor)?;
    let shape = dense.dim();
    let data = BinaryMatrix::from_dense(dense.view(), params.binarize, params.feature_axis)?;
    drop(dense);
    tracing::info!(
        tensor,
        features = data.n_features(),
        bits = data.n_bits(),
        density = data.density(),
        kernel = kernel_name(),
        "binarised"
    );
    cluster_binary(&data, tensor, [shape.0, shape.1], params, plot_dir)
}

/// Runs the analysis on an already binarised matrix; `label` names it in titles and the report,
/// `tensor_shape` is recorded as is. With `plot_dir`, the plots are written there (file names
/// recorded in [`TensorClusters::plots`]).
pub fn cluster_binary(
    data: &BinaryMatrix,
    label: &str,
    tensor_shape: [usize; 2],
    params: &TensorClusterParams,
    plot_dir: Option<&Path>,
) -> Result<TensorClusters> {
    let np = &params.neighbourhood;
    let report = neighbourhood_clustering(data, np)?;
    let mut separation_by_method = vec![separations(&report.per_k, &report.per_k, report.method)?];
    if params.compare_methods {
        for m in [
            ClusterMethod::HammingKMeans,
            ClusterMethod::LinfaKMeans,
            ClusterMethod::Ward,
        ] {
            if m == report.method {
                continue;
            }
            let other = neighbourhood_clustering(
                data,
                &NeighbourhoodParams {
                    method: m,
                    reference: ReferenceChoice::Index(report.reference),
                    ..np.clone()
                },
            )?;
            separation_by_method.push(separations(&other.per_k, &report.per_k, m)?);
        }
    }
    let multi_execution = match params.executions {
        Some(n) => {
            let seed = match np.reference {
                ReferenceChoice::Seeded(s) => s,
                ReferenceChoice::Index(_) => np.seed,
            };
            let m = multi_execution(data, np, n, seed)?;
            Some(MultiExecutionSummary {
                seed: m.seed,
                references: m.executions.iter().map(|e| e.reference).collect(),
                per_k: m.per_k,
            })
        }
        None => None,
    };
    let plots = match plot_dir {
        Some(dir) => draw_plots(data, label, &report, dir)?,
        None => Vec::new(),
    };
    for kr in &report.per_k {
        let coh: Vec<String> = kr
            .coherence
            .iter()
            .map(|c| format!("B{}={:.3}", c.block_size, c.weighted_mean))
            .collect();
        tracing::info!(
            tensor = label,
            k = kr.k,
            sizes = ?kr.sizes,
            separation = ?kr.metrics.separation_ratio,
            coherence = %coh.join(" "),
            "clustered"
        );
    }
    Ok(TensorClusters {
        tensor: label.to_string(),
        tensor_shape,
        n_features: data.n_features(),
        n_bits: data.n_bits(),
        density: data.density(),
        reference: report.reference,
        neighbours: report.neighbours,
        neighbour_counts: report.neighbour_counts,
        neighbour_distances: report.neighbour_distances,
        subset: report.subset,
        method: report.method,
        per_k: report.per_k,
        separation_by_method,
        multi_execution,
        plots,
    })
}

fn separations(
    per_k: &[KClustering],
    main: &[KClustering],
    method: ClusterMethod,
) -> Result<MethodSeparation> {
    let per_k = per_k
        .iter()
        .zip(main)
        .map(|(k, m)| {
            Ok(KSeparation {
                k: k.k,
                separation_ratio: k.metrics.separation_ratio,
                ari_vs_main: adjusted_rand_index(&m.labels, &k.labels)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MethodSeparation { method, per_k })
}

/// Name of a method as used on the command line.
pub fn method_name(m: ClusterMethod) -> &'static str {
    match m {
        ClusterMethod::HammingKMeans => "hamming-kmeans",
        ClusterMethod::LinfaKMeans => "linfa-kmeans",
        ClusterMethod::Ward => "ward",
    }
}

#[cfg(feature = "plots")]
fn draw_plots(
    data: &BinaryMatrix,
    label: &str,
    report: &crate::procedure::NeighbourhoodReport,
    dir: &Path,
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let short = short_label(label);
    let mut p = SpyPlotParams::new(format!("{short}, mask"));
    p.x_desc = "feature (natural order)".into();
    spy_plot(data, None, &p, &dir.join("spy.png"))?;
    written.push("spy.png".to_string());

    let gradient = hamming_gradient(data, report.reference)?;
    let mut p = SpyPlotParams::new(format!(
        "{short}, Hamming gradient from feature {}",
        report.reference
    ));
    p.x_desc = "feature, by Hamming distance to the reference (reference first)".into();
    spy_plot(data, Some(&gradient), &p, &dir.join("spy_gradient.png"))?;
    written.push("spy_gradient.png".to_string());

    let subset = data.select(&report.subset)?;
    for kr in &report.per_k {
        let (order, boundaries) = cluster_order(&kr.labels);
        let mut p = SpyPlotParams::new(format!(
            "{short}, reference {} + {} nearest, {} k = {}",
            report.reference,
            report.neighbours.len(),
            method_name(report.method),
            kr.k
        ));
        p.x_desc = "neighbourhood feature in cluster order (red lines: cluster boundaries)".into();
        p.boundaries = boundaries;
        let name = format!("spy_clusters_k{}.png", kr.k);
        spy_plot(&subset, Some(&order), &p, &dir.join(&name))?;
        written.push(name);
    }

    let d = one_vs_all(data, report.reference)?;
    let nb = data.n_bits() as f64;
    let dist: Vec<f64> = d
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != report.reference)
        .map(|(_, &c)| f64::from(c) / nb)
        .collect();
    hamming_histogram(
        &dist,
        60,
        &format!(
            "{short}, Hamming distance from feature {}",
            report.reference
        ),
        "all other features",
        &dir.join("hamming_hist.png"),
    )?;
    written.push("hamming_hist.png".to_string());
    Ok(written)
}

/// Without the `plots` feature, asking for plots is an error that says so.
#[cfg(not(feature = "plots"))]
fn draw_plots(
    _data: &BinaryMatrix,
    _label: &str,
    _report: &crate::procedure::NeighbourhoodReport,
    dir: &Path,
) -> Result<Vec<String>> {
    Err(ClusterError::Plot {
        path: dir.to_path_buf(),
        message: "sparsity-clustering was built without its `plots` feature".into(),
    })
}

/// Draws the separation ratio of every method (rows) for every tensor and `k` (columns) to
/// `path`. Errors when `tensors` is empty (feature `plots`).
#[cfg(feature = "plots")]
pub fn separation_heatmap_of(tensors: &[TensorClusters], path: &Path) -> Result<()> {
    let first = tensors.first().ok_or(ClusterError::InvalidParam {
        name: "heat map",
        value: "0 tensors".into(),
        reason: "need at least one tensor",
    })?;
    let methods: Vec<ClusterMethod> = first
        .separation_by_method
        .iter()
        .map(|m| m.method)
        .collect();
    let several = tensors.len() > 1;
    let mut cols = Vec::new();
    for t in tensors {
        for k in &t.per_k {
            cols.push(if several {
                format!("{}, k={}", short_label(&t.tensor), k.k)
            } else {
                format!("k={}", k.k)
            });
        }
    }
    let values: Vec<Vec<Option<f64>>> = methods
        .iter()
        .map(|&m| {
            tensors
                .iter()
                .flat_map(|t| {
                    let row = t.separation_by_method.iter().find(|s| s.method == m);
                    t.per_k.iter().map(move |k| {
                        row.and_then(|r| r.per_k.iter().find(|x| x.k == k.k))
                            .and_then(|x| x.separation_ratio)
                    })
                })
                .collect()
        })
        .collect();
    let rows: Vec<String> = methods
        .iter()
        .map(|&m| method_name(m).to_string())
        .collect();
    let title = if several {
        "separation ratio (between / within)".to_string()
    } else {
        format!(
            "separation ratio (between / within), {}",
            short_label(&first.tensor)
        )
    };
    separation_heatmap(&rows, &cols, &values, &title, path)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.3}"))
}

/// A plain-text summary of the clustered tensors: one line per tensor, one per (method, k).
pub fn summary(tensors: &[TensorClusters]) -> String {
    let mut out = String::new();
    for t in tensors {
        out.push_str(&format!(
            "{}: {} features x {} bits, density {:.4}, reference {}, {} neighbours at distance {}..{}\n",
            t.tensor,
            t.n_features,
            t.n_bits,
            t.density,
            t.reference,
            t.neighbours.len(),
            fmt_opt(t.neighbour_distances.first().copied()),
            fmt_opt(t.neighbour_distances.last().copied()),
        ));
        for kr in &t.per_k {
            let coh: Vec<String> = kr
                .coherence
                .iter()
                .map(|c| format!("B{}={:.3}", c.block_size, c.weighted_mean))
                .collect();
            out.push_str(&format!(
                "  {} k={:>2}: separation {} (within {}, between {}; centroid variant {}), sizes {:?}, MMM {}\n",
                method_name(t.method),
                kr.k,
                fmt_opt(kr.metrics.separation_ratio),
                fmt_opt(kr.metrics.within_mean),
                fmt_opt(kr.metrics.between_mean),
                fmt_opt(kr.centroid_metrics.separation_ratio),
                kr.sizes,
                coh.join(" "),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_slugs() {
        assert_eq!(
            short_label("model.layers.1.mlp.up_proj.weight"),
            "L1 up_proj"
        );
        assert_eq!(short_label("w"), "w");
        assert_eq!(tensor_slug("a/b c.weight"), "a_b_c.weight");
        assert_eq!(tensor_slug(".."), "tensor");
    }

    #[test]
    fn json_names_match_the_command_line() {
        let m = serde_json::to_string(&ClusterMethod::HammingKMeans).unwrap();
        assert_eq!(m, "\"hamming-kmeans\"");
        let m = serde_json::to_string(&ClusterMethod::LinfaKMeans).unwrap();
        assert_eq!(m, "\"linfa-kmeans\"");
        let b = serde_json::to_value(Binarize::AbsGreater(0.5)).unwrap();
        assert_eq!(b, serde_json::json!({"rule": "abs-gt", "threshold": 0.5}));
        let b = serde_json::to_value(Binarize::NonZero).unwrap();
        assert_eq!(b, serde_json::json!({"rule": "nonzero"}));
        assert_eq!(method_name(ClusterMethod::Ward), "ward");
    }
}
