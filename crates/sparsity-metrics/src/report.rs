//! The comprehensive sparsity report (the original's `calculate_comprehensive_sparsity`),
//! plus the measures the original lacked.
//!
//! JSON keys of the original, exactly: `percentile.pP.{threshold,sparsity,neurons_below}`,
//! `entropy.{entropy,normalized_entropy,sparsity_from_entropy,num_bins}`,
//! `gini.{gini_coefficient,sparsity_from_gini}`, `traditional.{threshold,sparsity,neurons_below}`,
//! `optimal.{threshold,sparsity}` (always computed, never `null`). Added: `most_reasonable`,
//! `hoyer`, `activation` (when built from activations), `notes` (tautologies), `config`.

use ndarray::ArrayView1;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::activation_sparsity::CalibratedThreshold;
use crate::entropy::{EntropyMode, EntropyResult, entropy_sparsity};
use crate::error::{MetricsError, Result, check_target};
use crate::gini::{GiniResult, gini_sparsity};
use crate::hoyer::hoyer_sparsity;
use crate::near_zero::NearZeroSummary;
use crate::neuron_stats::Aggregation;
use crate::percentile::{
    DEFAULT_PERCENTILES, PercentileEntry, percentile_key, percentile_sparsity,
};
use crate::threshold::{
    ModelFamily, OptimalResult, ThresholdResult, check_threshold, optimal_threshold,
    threshold_sparsity,
};

/// Options of the comprehensive report. Validate with [`ReportParams::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportParams {
    /// Percentiles in `[0, 100]` (default 5, 10, 25, 50, 75, 90, 95).
    pub percentiles: Vec<f64>,
    /// Entropy formula (default Shannon).
    pub entropy_mode: EntropyMode,
    /// Model family, for the default traditional threshold.
    pub family: ModelFamily,
    /// Traditional threshold override (default: by family).
    pub threshold: Option<f64>,
    /// Target of the optimal threshold (default 0.3, as every call site of the original).
    pub target: f64,
    /// Targets of the calibrated activation-level threshold (default 0.4 and 0.5, TEAL's levels).
    pub activation_targets: Vec<f64>,
    /// ε of the near-zero fraction relative to each neuron's mean |a| (default 0.1).
    pub near_zero_epsilon: f64,
}

impl Default for ReportParams {
    fn default() -> Self {
        Self {
            percentiles: DEFAULT_PERCENTILES.to_vec(),
            entropy_mode: EntropyMode::Shannon,
            family: ModelFamily::Unknown,
            threshold: None,
            target: 0.3,
            activation_targets: vec![0.4, 0.5],
            near_zero_epsilon: 0.1,
        }
    }
}

impl ReportParams {
    /// The traditional threshold in use (override, else the family default).
    pub fn traditional_threshold(&self) -> f64 {
        self.threshold
            .unwrap_or_else(|| self.family.default_threshold())
    }

    /// Checks every option; returns the params unchanged when valid.
    pub fn validate(self) -> Result<Self> {
        if self.percentiles.is_empty() {
            return Err(MetricsError::InvalidOption {
                name: "percentiles".into(),
                value: "[]".into(),
                reason: "at least one percentile is needed".into(),
            });
        }
        for &p in &self.percentiles {
            if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
                return Err(MetricsError::PercentileOutOfRange(p));
            }
        }
        check_target("target", self.target)?;
        for &t in &self.activation_targets {
            check_target("activation target", t)?;
        }
        check_threshold(self.traditional_threshold())?;
        if !(self.near_zero_epsilon.is_finite() && self.near_zero_epsilon >= 0.0) {
            return Err(MetricsError::InvalidOption {
                name: "near_zero_epsilon".into(),
                value: self.near_zero_epsilon.to_string(),
                reason: "must be finite and >= 0".into(),
            });
        }
        Ok(self)
    }
}

/// Percentile entries in the order given, serialised as a JSON object `{"p5": {...}, ...}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PercentileMap(pub Vec<(String, PercentileEntry)>);

impl PercentileMap {
    /// The entry for key `pP` (e.g. `"p50"`).
    pub fn get(&self, key: &str) -> Option<&PercentileEntry> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, e)| e)
    }
}

impl Serialize for PercentileMap {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for PercentileMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PercentileMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of percentile keys to entries")
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<PercentileMap, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, PercentileEntry>()? {
                    out.push((k, v));
                }
                Ok(PercentileMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Hoyer sparsity of the per-neuron values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HoyerResult {
    /// `(√n − ‖v‖₁/‖v‖₂)/(√n − 1)`.
    pub hoyer_sparsity: f64,
}

/// Activation-level measures (need the activations, not only their variances).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivationMeasures {
    /// Number of activations (tokens × neurons).
    pub activations: u64,
    /// Fraction of activations exactly 0.
    pub zero_fraction: f64,
    /// The magnitude threshold of `below_threshold_fraction` (the traditional threshold).
    pub magnitude_threshold: f64,
    /// Fraction of activations with `|a| < magnitude_threshold`.
    pub below_threshold_fraction: f64,
    /// Calibrated (TEAL-style) thresholds, one per target.
    pub calibrated: Vec<CalibratedThreshold>,
    /// Near-zero fraction relative to each neuron's mean |a|.
    pub near_zero: NearZeroSummary,
}

/// A note attached to a measure (e.g. that it is tautological).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureNote {
    /// The measure's key in the report.
    pub measure: String,
    /// The note.
    pub note: String,
}

/// What the report was computed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportConfig {
    /// What the per-neuron values are (`"variance"`, or `"values"` when given directly).
    pub values: String,
    /// Aggregation of the variance, when computed from activations.
    pub aggregation: Option<Aggregation>,
    /// Model family.
    pub family: ModelFamily,
    /// Entropy formula.
    pub entropy_mode: EntropyMode,
    /// Target of the optimal threshold.
    pub target: f64,
    /// Number of neurons.
    pub neurons: usize,
    /// Variance samples (when computed from activations).
    pub samples: Option<u64>,
    /// Token rows (when computed from activations).
    pub tokens: Option<u64>,
}

/// The comprehensive report. Serialises to the original's keys plus the new measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparsityReport {
    /// Percentile sparsity per `pP` key (tautological sparsities, informative thresholds).
    pub percentile: PercentileMap,
    /// Entropy sparsity.
    pub entropy: EntropyResult,
    /// Gini sparsity.
    pub gini: GiniResult,
    /// Fixed-threshold sparsity.
    pub traditional: ThresholdResult,
    /// Threshold for the target (tautological sparsity).
    pub optimal: OptimalResult,
    /// The non-tautological method (traditional, entropy, gini, hoyer) whose sparsity is closest
    /// to 0.5 (first in that order on ties).
    pub most_reasonable: String,
    /// Hoyer sparsity.
    pub hoyer: HoyerResult,
    /// Activation-level measures, when built from activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationMeasures>,
    /// Notes on tautological or non-discriminating measures for this input.
    pub notes: Vec<MeasureNote>,
    /// What the report was computed over.
    pub config: ReportConfig,
}

impl SparsityReport {
    /// The report over per-neuron values `v` (`[neurons]`, absolute values used), e.g. the
    /// variances from [`NeuronStats::variance`](crate::NeuronStats::variance).
    pub fn from_values(v: ArrayView1<f64>, params: &ReportParams) -> Result<Self> {
        let params = params.clone().validate()?;
        let n = v.len();
        let percentile = PercentileMap(
            percentile_sparsity(v, &params.percentiles)?
                .into_iter()
                .map(|(p, e)| (percentile_key(p), e))
                .collect(),
        );
        let entropy = entropy_sparsity(v, params.entropy_mode)?;
        let gini = gini_sparsity(v)?;
        let traditional = threshold_sparsity(v, params.traditional_threshold())?;
        let optimal = optimal_threshold(v, params.target)?;
        let hoyer = HoyerResult {
            hoyer_sparsity: hoyer_sparsity(v)?,
        };
        let candidates = [
            ("traditional", traditional.sparsity),
            ("entropy", entropy.sparsity_from_entropy),
            ("gini", gini.sparsity_from_gini),
            ("hoyer", hoyer.hoyer_sparsity),
        ];
        let mut most_reasonable = candidates[0];
        for c in candidates {
            if (c.1 - 0.5).abs() < (most_reasonable.1 - 0.5).abs() {
                most_reasonable = c;
            }
        }
        let mut notes = Vec::new();
        let tol = 1.0 / n as f64 + 1e-12;
        let tautological: Vec<String> = percentile
            .0
            .iter()
            .zip(&params.percentiles)
            .filter(|((_, e), p)| (e.sparsity - *p / 100.0).abs() <= tol)
            .map(|((k, _), _)| k.clone())
            .collect();
        if !tautological.is_empty() {
            notes.push(MeasureNote {
                measure: "percentile".into(),
                note: format!(
                    "tautological: sparsity of {} equals p/100 within 1/n by construction (threshold = percentile of the same values); only the thresholds describe the data",
                    tautological.join(", ")
                ),
            });
        }
        if (optimal.sparsity - params.target).abs() <= tol {
            notes.push(MeasureNote {
                measure: "optimal".into(),
                note: format!(
                    "tautological: sparsity ≈ target {} by construction (threshold = sorted |v| at index ⌊target·n⌋); only the threshold describes the data",
                    params.target
                ),
            });
        }
        if params.entropy_mode == EntropyMode::Legacy {
            notes.push(MeasureNote {
                measure: "entropy".into(),
                note: "legacy formula sums histogram densities, not probabilities: normalized_entropy ≤ 0 and sparsity_from_entropy ≥ 1 for any data with more than one non-empty bin".into(),
            });
        }
        if traditional.sparsity == 0.0 || traditional.sparsity == 1.0 {
            notes.push(MeasureNote {
                measure: "traditional".into(),
                note: format!(
                    "not discriminating: threshold {} lies outside the range of |v| (sparsity {})",
                    traditional.threshold, traditional.sparsity
                ),
            });
        }
        Ok(Self {
            percentile,
            entropy,
            gini,
            traditional,
            optimal,
            most_reasonable: most_reasonable.0.to_string(),
            hoyer,
            activation: None,
            notes,
            config: ReportConfig {
                values: "values".into(),
                aggregation: None,
                family: params.family,
                entropy_mode: params.entropy_mode,
                target: params.target,
                neurons: n,
                samples: None,
                tokens: None,
            },
        })
    }

    /// Every method's sparsity, in a fixed order, for plots and the results store:
    /// `(method, sparsity)`; percentile entries as `percentile_pP`.
    pub fn method_sparsities(&self) -> Vec<(String, f64)> {
        let mut out = vec![
            ("traditional".to_string(), self.traditional.sparsity),
            ("entropy".to_string(), self.entropy.sparsity_from_entropy),
            ("gini".to_string(), self.gini.sparsity_from_gini),
            ("hoyer".to_string(), self.hoyer.hoyer_sparsity),
            ("optimal".to_string(), self.optimal.sparsity),
        ];
        if let Some(a) = &self.activation {
            for c in &a.calibrated {
                out.push((format!("calibrated_{}", c.target), c.sparsity));
            }
            out.push(("near_zero".to_string(), a.near_zero.fraction));
        }
        for (k, e) in &self.percentile.0 {
            out.push((format!("percentile_{k}"), e.sparsity));
        }
        out
    }

    /// Every scalar of the report as `(method, metric, value)` rows (for the results store).
    pub fn flat_rows(&self) -> Vec<(String, String, f64)> {
        let mut r = Vec::new();
        let mut push = |m: &str, k: &str, v: f64| r.push((m.to_string(), k.to_string(), v));
        for (k, e) in &self.percentile.0 {
            let m = format!("percentile.{k}");
            push(&m, "threshold", e.threshold);
            push(&m, "sparsity", e.sparsity);
            push(&m, "neurons_below", e.neurons_below as f64);
        }
        push("entropy", "entropy", self.entropy.entropy);
        push(
            "entropy",
            "normalized_entropy",
            self.entropy.normalized_entropy,
        );
        push(
            "entropy",
            "sparsity_from_entropy",
            self.entropy.sparsity_from_entropy,
        );
        push("entropy", "num_bins", self.entropy.num_bins as f64);
        push("gini", "gini_coefficient", self.gini.gini_coefficient);
        push("gini", "sparsity_from_gini", self.gini.sparsity_from_gini);
        push("traditional", "threshold", self.traditional.threshold);
        push("traditional", "sparsity", self.traditional.sparsity);
        push(
            "traditional",
            "neurons_below",
            self.traditional.neurons_below as f64,
        );
        push("optimal", "threshold", self.optimal.threshold);
        push("optimal", "sparsity", self.optimal.sparsity);
        push("hoyer", "hoyer_sparsity", self.hoyer.hoyer_sparsity);
        if let Some(a) = &self.activation {
            push("activation", "zero_fraction", a.zero_fraction);
            push(
                "activation",
                "below_threshold_fraction",
                a.below_threshold_fraction,
            );
            for c in &a.calibrated {
                let m = format!("activation.calibrated.t{}", c.target);
                push(&m, "threshold", c.threshold);
                push(&m, "sparsity", c.sparsity);
            }
            push("activation.near_zero", "fraction", a.near_zero.fraction);
            push(
                "activation.near_zero",
                "max_neuron_fraction",
                a.near_zero.max_neuron_fraction,
            );
            push(
                "activation.near_zero",
                "neurons_mostly_near_zero",
                a.near_zero.neurons_mostly_near_zero as f64,
            );
        }
        r
    }
}
