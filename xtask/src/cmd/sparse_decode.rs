//! `cargo xtask sparse-decode` (being implemented).

/// Arguments.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the command.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cargo xtask sparse-decode` is not implemented yet")
}
