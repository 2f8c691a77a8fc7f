//! `cargo xtask cluster`: Hamming neighbourhood clustering of every requested tensor of a
//! safetensors file, with its JSON report, plots and results-store rows.

use std::path::PathBuf;

use sparsity_clustering::report::{
    ClusterReport, TensorClusterParams, cluster_tensor, method_name, separation_heatmap_of,
    summary, tensor_slug,
};

use crate::error::{Result, StepContext};
use crate::results::{ResultRow, RunMeta, ToRows, append_rows};

/// One clustering run.
#[derive(Debug, Clone)]
pub struct ClusterRun {
    /// The safetensors file.
    pub input: PathBuf,
    /// 2-D tensors of the file, in order.
    pub tensors: Vec<String>,
    /// The clustering options.
    pub params: TensorClusterParams,
    /// Draw the plots.
    pub plots: bool,
    /// Output directory (`clusters.json`, one plot folder per tensor, the heat map).
    pub out: PathBuf,
    /// Results store directory.
    pub results_dir: PathBuf,
    /// Model label of the rows (default: the input's file stem).
    pub model: Option<String>,
    /// Memory budget in bytes (`--max-memory`); `None`: the memory the system reports available.
    pub max_memory: Option<u64>,
}

impl ClusterRun {
    /// The run's peak memory, estimated from the file's header alone (nothing is loaded): the
    /// file read whole, the tensor as f32 and as bits, the reference's distances to every
    /// feature, and for the neighbourhood (reference + neighbours, at most every feature) its
    /// features as f64 (the k-means and Ward inputs) and three all-pairs distance matrices
    /// (exact metrics, Ward, the compared methods). Tensors are clustered one after another, so
    /// the peak is the largest tensor's.
    pub fn memory_estimate(&self) -> Result<sparsity_io::budget::MemoryEstimate> {
        use sparsity_clustering::FeatureAxis;
        let header = sparsity_io::read_header(&self.input)
            .with_step(|| format!("reading the header of {}", self.input.display()))?;
        let file = std::fs::metadata(&self.input)
            .map(|m| m.len() as f64)
            .unwrap_or(0.0);
        let mut worst: Option<sparsity_io::budget::MemoryEstimate> = None;
        for name in &self.tensors {
            let meta = header.get(name).ok_or_else(|| {
                crate::ExperimentError::invalid(
                    "--tensor",
                    format!("`{name}` is not a tensor of {}", self.input.display()),
                )
            })?;
            let [rows, cols] = meta.shape[..] else {
                return Err(crate::ExperimentError::invalid(
                    "--tensor",
                    format!("`{name}` has shape {:?}, not 2-D", meta.shape),
                ));
            };
            let (features, bits) = match self.params.feature_axis {
                FeatureAxis::Columns => (cols as f64, rows as f64),
                FeatureAxis::Rows => (rows as f64, cols as f64),
            };
            let k = (self.params.neighbourhood.n_neighbours as f64 + 1.0).min(features);
            let e = sparsity_io::budget::MemoryEstimate::new(format!(
                "cluster of `{name}` ({} features of {} bits, {} neighbours)",
                features, bits, self.params.neighbourhood.n_neighbours
            ))
            .part("file", file)
            .part("tensor (f32)", 4.0 * features * bits)
            .part("bit matrix", features * bits / 8.0)
            .part("reference distances", 16.0 * features)
            .part("neighbourhood features (f64)", 8.0 * k * bits)
            .part("pairwise distances", 3.0 * 8.0 * k * k);
            if worst.as_ref().is_none_or(|w| e.total() > w.total()) {
                worst = Some(e);
            }
        }
        worst.ok_or_else(|| crate::ExperimentError::invalid("--tensor", "no tensor given"))
    }
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct ClusterOutcome {
    /// The report (as written to `json`).
    pub report: ClusterReport,
    /// `OUT/clusters.json`.
    pub json: PathBuf,
    /// The results-store file.
    pub results: PathBuf,
    /// A plain-text summary.
    pub summary: String,
}

/// Runs the clustering of every tensor and writes the report, plots and rows.
pub fn run_cluster(run: &ClusterRun) -> Result<ClusterOutcome> {
    run.memory_estimate()?
        .check(
            run.max_memory,
            "use fewer --neighbors, a smaller tensor, or raise --max-memory",
        )
        .step("checking the memory budget")?;
    std::fs::create_dir_all(&run.out)
        .with_step(|| format!("creating the output directory {}", run.out.display()))?;
    let meta = RunMeta::new(
        "cluster",
        &serde_json::json!({ "input": run.input.display().to_string(), "params": run.params }),
    )
    .step("serialising the run parameters")?;
    let mut report = ClusterReport::new(&run.input, &run.params, meta.git_rev.clone());
    let span = tracing::info_span!(
        "cluster",
        progress_total = run.tensors.len() as u64,
        progress_unit = "tensors"
    );
    for name in &run.tensors {
        let slug = tensor_slug(name);
        let plot_dir = run.out.join(&slug);
        let mut t = cluster_tensor(
            &run.input,
            name,
            &run.params,
            run.plots.then_some(plot_dir.as_path()),
        )
        .with_step(|| {
            format!(
                "clustering tensor `{name}` of {} ({} neighbours, k = {:?})",
                run.input.display(),
                run.params.neighbourhood.n_neighbours,
                run.params.neighbourhood.ks
            )
        })?;
        for p in t.plots.iter_mut() {
            *p = format!("{slug}/{p}");
        }
        report.tensors.push(t);
        tracing::trace!(target: sparsity_models::PROGRESS, parent: &span, progress_inc = 1u64);
    }
    drop(span);
    let cells: usize = report.tensors.iter().map(|t| t.per_k.len()).sum();
    let n_methods = report
        .tensors
        .first()
        .map_or(0, |t| t.separation_by_method.len());
    if run.plots && (cells > 1 || n_methods > 1) {
        let name = "separation_heatmap.png";
        separation_heatmap_of(&report.tensors, &run.out.join(name)).step("separation heat map")?;
        report.heatmap = Some(name.to_string());
    }
    let json = run.out.join("clusters.json");
    crate::write_json(&json, &report)?;
    let model = run.model.clone().unwrap_or_else(|| {
        run.input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "unknown".into())
    });
    let rows = report.to_rows(&meta, &model);
    let results = append_rows(&run.results_dir, &rows).step("appending to the results store")?;
    tracing::info!(json = %json.display(), results = %results.display(), rows = rows.len(), "cluster analysis written");
    let summary = summary(&report.tensors);
    Ok(ClusterOutcome {
        report,
        json,
        results,
        summary,
    })
}

/// Layer index from a tensor name: the first all-digit dot-separated component.
pub fn layer_of(tensor: &str) -> Option<i64> {
    tensor
        .split('.')
        .find(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
}

/// One row per defined number: `method` = `<clustering method>:k<k>` (or `neighbours`),
/// `metric` = the quantity. Undefined values (`None`) are left out.
impl ToRows for ClusterReport {
    fn to_rows(&self, meta: &RunMeta, model: &str) -> Vec<ResultRow> {
        let mut rows = Vec::new();
        for t in &self.tensors {
            let mut push = |method: &str, metric: &str, value: Option<f64>| {
                if let Some(value) = value {
                    rows.push(meta.row(
                        model,
                        layer_of(&t.tensor),
                        &t.tensor,
                        method,
                        metric,
                        value,
                    ));
                }
            };
            let nd = &t.neighbour_distances;
            let n = nd.len() as f64;
            push("neighbours", "density", Some(t.density));
            push("neighbours", "reference", Some(t.reference as f64));
            push("neighbours", "distance_min", nd.first().copied());
            push("neighbours", "distance_max", nd.last().copied());
            push(
                "neighbours",
                "distance_mean",
                (n > 0.0).then(|| nd.iter().sum::<f64>() / n),
            );
            let main = method_name(t.method);
            for kr in &t.per_k {
                let m = format!("{main}:k{}", kr.k);
                let met = &kr.metrics;
                push(&m, "separation_ratio", met.separation_ratio);
                push(&m, "within_mean", met.within_mean);
                push(&m, "within_std", met.within_std);
                push(&m, "between_mean", met.between_mean);
                push(&m, "between_std", met.between_std);
                push(
                    &m,
                    "singleton_clusters",
                    Some(met.singleton_clusters as f64),
                );
                let cm = &kr.centroid_metrics;
                push(&m, "centroid_separation_ratio", cm.separation_ratio);
                push(&m, "centroid_within", Some(cm.within));
                push(&m, "centroid_between", cm.between);
                push(&m, "inertia", Some(cm.inertia));
                push(
                    &m,
                    "largest_cluster",
                    kr.sizes.iter().max().map(|&s| s as f64),
                );
                for c in &kr.coherence {
                    let b = c.block_size;
                    push(&m, &format!("mmm_coherence_b{b}"), Some(c.weighted_mean));
                    push(&m, &format!("mmm_baseline_b{b}"), Some(c.weighted_baseline));
                }
                if let Some(l) = &kr.legacy_coherence {
                    let g = l.group_size;
                    push(
                        &m,
                        &format!("mmm_legacy_coherence_g{g}"),
                        Some(l.mean_coherence),
                    );
                    push(
                        &m,
                        &format!("mmm_legacy_baseline_g{g}"),
                        Some(l.independence_baseline),
                    );
                }
            }
            for s in t.separation_by_method.iter().skip(1) {
                for k in &s.per_k {
                    let m = format!("{}:k{}", method_name(s.method), k.k);
                    push(&m, "separation_ratio", k.separation_ratio);
                    push(&m, &format!("ari_vs_{main}"), Some(k.ari_vs_main));
                }
            }
            if let Some(me) = &t.multi_execution {
                for s in &me.per_k {
                    let m = format!("{main}:k{}:multi", s.k);
                    push(&m, "separation_ratio_mean", s.mean);
                    push(&m, "separation_ratio_std", s.std);
                    push(&m, "separation_ratio_median", s.median);
                    push(&m, "executions_undefined", Some(s.n_undefined as f64));
                }
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn layer_from_tensor_name() {
        assert_eq!(
            super::layer_of("model.layers.12.mlp.up_proj.weight"),
            Some(12)
        );
        assert_eq!(super::layer_of("w"), None);
    }
}
