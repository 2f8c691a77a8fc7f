//! Which models and texts a run uses: the built-in demo pair (trained on first use, with the demo
//! corpus' splits as default texts), or model directories / cached hub ids with texts the user
//! gives.

use std::path::{Path, PathBuf};

use sparsity_demo::DemoModels;
use sparsity_models::text::read_texts;

use crate::error::{ExperimentError, Result, StepContext};

/// The demo model names (`demo-gpt2`, `demo-mamba`) accepted wherever a model is.
pub const DEMO_MODELS: [&str; 2] = ["demo-gpt2", "demo-mamba"];

/// The extra demo models (`demo-opt`, `demo-llama`): trained on request on the same corpus and
/// tokenizer, never part of the default pair.
pub const EXTRA_DEMO_MODELS: [&str; 2] = ["demo-opt", "demo-llama"];

fn is_demo(id: &str) -> bool {
    DEMO_MODELS.contains(&id) || EXTRA_DEMO_MODELS.contains(&id)
}

/// Resolved models with the texts that go with them.
#[derive(Debug, Clone)]
pub struct ModelSet {
    /// (label, model directory), in order.
    pub models: Vec<(String, PathBuf)>,
    /// The demo models, when the set is (part of) the demo pair.
    pub demo: Option<DemoModels>,
}

impl ModelSet {
    /// The calibration / training texts of the demo corpus, when these are demo models.
    pub fn demo_train_texts(&self) -> Option<Vec<String>> {
        self.demo.as_ref().map(DemoModels::train_texts)
    }

    /// The held-out texts of the demo corpus, when these are demo models.
    pub fn demo_held_out_texts(&self) -> Option<Vec<String>> {
        self.demo.as_ref().map(DemoModels::held_out_texts)
    }
}

/// Resolves `ids`: none → both demo models; `demo-gpt2` / `demo-mamba` / `demo-opt` /
/// `demo-llama` → that demo model (from `demo_cache`, trained on first use); anything else a
/// directory or a cached hub id. Demo and other models cannot be mixed (their texts differ).
pub fn resolve_models(ids: &[String], demo_cache: &Path) -> Result<ModelSet> {
    let wants_demo = ids.is_empty() || ids.iter().all(|i| is_demo(i));
    if wants_demo {
        let demo = sparsity_demo::ensure_demo_models(demo_cache)
            .step("preparing the built-in demo models")?;
        tracing::info!(
            gpt2_val_loss = demo.record.gpt2.val_loss,
            mamba_val_loss = demo.record.mamba.val_loss,
            unigram_entropy = demo.record.unigram_entropy,
            "demo models (validation loss, nats/token)"
        );
        let all = [
            (DEMO_MODELS[0], demo.gpt2_dir.clone()),
            (DEMO_MODELS[1], demo.mamba_dir.clone()),
        ];
        let mut models: Vec<(String, std::path::PathBuf)> = all
            .into_iter()
            .filter(|(n, _)| ids.is_empty() || ids.iter().any(|i| i == n))
            .map(|(n, d)| (n.to_string(), d))
            .collect();
        for id in ids
            .iter()
            .filter(|i| EXTRA_DEMO_MODELS.contains(&i.as_str()))
        {
            let which: sparsity_demo::ExtraDemo = id
                .trim_start_matches("demo-")
                .parse()
                .map_err(|e: String| ExperimentError::invalid("--model", e))?;
            let extra = sparsity_demo::ensure_extra_demo(demo_cache, which)
                .with_step(|| format!("preparing the demo model `{id}`"))?;
            tracing::info!(
                model = %id,
                val_loss = extra.record.record.val_loss,
                "extra demo model (validation loss, nats/token)"
            );
            models.push((id.clone(), extra.dir));
        }
        return Ok(ModelSet {
            models,
            demo: Some(demo),
        });
    }
    if let Some(d) = ids.iter().find(|i| is_demo(i)) {
        return Err(ExperimentError::invalid(
            "--model",
            format!("`{d}` cannot be mixed with other models (their texts differ)"),
        ));
    }
    let models = ids
        .iter()
        .map(|id| {
            let dir = sparsity_models::hub::resolve_model_dir(id)
                .with_step(|| format!("resolving model `{id}`"))?;
            Ok((id.clone(), dir))
        })
        .collect::<Result<_>>()?;
    Ok(ModelSet { models, demo: None })
}

/// The texts of `path` when given, else `default`; `option` names the flag in the error.
pub fn texts_or(
    path: Option<&Path>,
    default: Option<Vec<String>>,
    option: &str,
) -> Result<Vec<String>> {
    match (path, default) {
        (Some(p), _) => read_texts(p).with_step(|| format!("reading texts from {}", p.display())),
        (None, Some(t)) => Ok(t),
        (None, None) => Err(ExperimentError::invalid(
            option,
            "required with a model other than the demo ones (the built-in corpus matches only \
             the demo models' tokenizer)",
        )),
    }
}
