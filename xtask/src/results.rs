//! The Parquet results store under `results/` (implemented with the metrics issue).
