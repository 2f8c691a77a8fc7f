//! `cargo xtask dsa-report FILE... --out DIR`: merge any number of DSA sweep result files (JSON
//! lines, e.g. one per shard) into one report (report.md, report.json, PNG plots). A run id that
//! appears in several files is counted once (the first occurrence).

use std::path::PathBuf;

use anyhow::bail;
use sparsity_experiments::dsa_sweep::{read_results, summarize, write_report};

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
    let mut all = Vec::new();
    for f in &args.files {
        if !f.is_file() {
            bail!("{}: no such results file", f.display());
        }
        all.extend(read_results(f)?);
    }
    if all.is_empty() {
        bail!("no runs in {:?}", args.files);
    }
    let report = summarize(&all)?;
    let md = write_report(&report, &args.files, &args.out)?;
    println!("DSA report over {} runs: {}", report.runs, md.display());
    Ok(())
}
