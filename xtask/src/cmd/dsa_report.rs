//! `cargo xtask dsa-report FILE... --out DIR`: merge any number of DSA sweep result files (JSON
//! lines, e.g. one per shard) into one report (report.md, report.json, PNG plots). A run id that
//! appears in several files is counted once (the first occurrence).

use std::path::PathBuf;

use sparsity_experiments::dsa_sweep::merge_report;

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Result files (JSON lines written by `dsa-sweep`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Report directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (report, md) = merge_report(&args.files, &args.out)?;
    println!("DSA report over {} runs: {}", report.runs, md.display());
    Ok(())
}
