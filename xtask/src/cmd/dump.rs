//! `cargo xtask dump --model DIR --input-ids FILE.safetensors --out FILE.safetensors`: runs a GPT-2 or
//! Mamba model on the id cases `input_ids`, `input_ids_2`, … and writes `logits`, `hidden_states.{i}` and
//! every hook site under the same names (suffix `_2`, … for further cases), f32.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json + model.safetensors) or a model id in the local Hugging Face cache.
    #[arg(long)]
    pub model: String,
    /// safetensors file with int64 `input_ids` [batch, seq] (and optionally `input_ids_2`, …).
    #[arg(long)]
    pub input_ids: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also write Mamba's `ssm_state.{l}` ([batch, seq, intermediate, state_size]).
    #[arg(long)]
    pub with_ssm_state: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let device = sparsity_models::cpu_device();
    let model = sparsity_models::CausalLm::load(&args.model, &device)
        .with_context(|| format!("loading model {}", args.model))?;
    let summary = sparsity_models::dump::dump(
        &model,
        &args.input_ids,
        &args.out,
        args.with_ssm_state,
        &device,
    )
    .with_context(|| {
        format!(
            "dumping {} to {}",
            args.input_ids.display(),
            args.out.display()
        )
    })?;
    tracing::info!(
        cases = summary.cases,
        tensors = summary.tensors.len(),
        out = %args.out.display(),
        "dump written"
    );
    println!(
        "wrote {} tensors for {} case(s) to {}",
        summary.tensors.len(),
        summary.cases,
        args.out.display()
    );
    Ok(())
}
