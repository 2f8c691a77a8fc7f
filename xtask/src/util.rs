//! Small helpers shared by the commands: logging, atomic file output, run ids.

use std::path::Path;

/// Logs go through `tracing`; `RUST_LOG` overrides the default `info` level. Plain text (no
/// ANSI escape codes) when stderr is not a terminal. The libraries' progress spans become bars
/// ([`crate::progress`]).
pub fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    let progress = crate::progress::ProgressLayer.with_filter(crate::progress::ProgressFilter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(progress)
        .try_init();
}

/// A progress bar that names its stage and what it counts, with elapsed time and ETA
/// (hidden when stderr is not a terminal).
pub fn progress_bar(stage: &str, unit: &str, total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let template = format!(
        "{{msg}} {{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed_precise}} elapsed, ETA {{eta}}]"
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(stage.to_string());
    bar
}

/// Sizes rayon's global pool (`--threads`); `None` keeps one thread per core.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        // a second initialisation (e.g. in tests) is harmless
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    Ok(())
}

/// xtask's demo cache: `$SPARSITY_LAB_CACHE/demo` when set, else the workspace's
/// `target/sparsity-lab-cache/demo` (`$CARGO_TARGET_DIR` when set), passed explicitly to the
/// library, whose own default is the user's cache directory.
pub fn workspace_demo_cache() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    sparsity_demo::demo::cache_dir_in_target(&target)
}

/// `--max-memory` and `--dry-run`, shared by the commands that allocate from their arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct BudgetArgs {
    /// Memory budget in bytes (suffixes K, M, G, T: powers of 1024); default: the memory the
    /// system reports available. The command refuses to start when its estimate is larger.
    #[arg(long, value_parser = sparsity_io::budget::parse_bytes)]
    pub max_memory: Option<u64>,
    /// Print the memory estimate (and the plan), then stop.
    #[arg(long)]
    pub dry_run: bool,
}
