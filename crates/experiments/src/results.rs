//! The shared Parquet results store under `results/` (schema in docs/results-store.md).
//!
//! Every command run appends one new file `results/<command>-<run_id>.parquet` (written to a
//! temporary file and renamed), so `SELECT … FROM 'results/*.parquet'` in DuckDB sees every run.
//! Uncompressed, one row group; columns: run_id, timestamp (UTC, µs), git_rev, command, model,
//! layer (nullable), site, method, metric, value (f64), parameters (JSON text).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Why the results store could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// There were no rows to write.
    #[error("no result rows to write")]
    Empty,
    /// The Parquet encoder failed.
    #[error("{path}: Parquet: {message}")]
    Parquet {
        /// The results file.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },
    /// Writing the file failed.
    #[error(transparent)]
    Io(#[from] sparsity_io::IoError),
    /// Reading a results file back failed: not readable, not Parquet, corrupt, or another schema.
    #[error("{path}: {message}")]
    Read {
        /// The results file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The Parquet schema of every results file.
pub const SCHEMA: &str = "message result_row {
  REQUIRED BYTE_ARRAY run_id (UTF8);
  REQUIRED INT64 timestamp (TIMESTAMP(MICROS,true));
  REQUIRED BYTE_ARRAY git_rev (UTF8);
  REQUIRED BYTE_ARRAY command (UTF8);
  REQUIRED BYTE_ARRAY model (UTF8);
  OPTIONAL INT64 layer;
  REQUIRED BYTE_ARRAY site (UTF8);
  REQUIRED BYTE_ARRAY method (UTF8);
  REQUIRED BYTE_ARRAY metric (UTF8);
  REQUIRED DOUBLE value;
  REQUIRED BYTE_ARRAY parameters (UTF8);
}";

/// One flat result row.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    /// Identifies the run (same for every row of one command invocation).
    pub run_id: String,
    /// Microseconds since the Unix epoch (UTC).
    pub timestamp_us: i64,
    /// Git revision of the code that produced the row.
    pub git_rev: String,
    /// The xtask command, e.g. `sparsity`.
    pub command: String,
    /// Model (or input file) the row describes.
    pub model: String,
    /// Layer index, if the row is per layer.
    pub layer: Option<i64>,
    /// Hook site or tensor name.
    pub site: String,
    /// Method, e.g. `gini` or `percentile.p50`.
    pub method: String,
    /// Metric of the method, e.g. `sparsity`.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// The run's options as JSON text.
    pub parameters: String,
}

/// What every row of one run shares: its id, time, code revision, command and options.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMeta {
    /// [`new_run_id`].
    pub run_id: String,
    /// Microseconds since the Unix epoch (UTC).
    pub timestamp_us: i64,
    /// [`git_revision`].
    pub git_rev: String,
    /// The command, e.g. `analyze`.
    pub command: String,
    /// The run's options as JSON text.
    pub parameters: String,
}

impl RunMeta {
    /// A new run of `command` now, at the current git revision, with `parameters` serialised
    /// (a serialisation failure is an error, never a placeholder).
    pub fn new(
        command: &str,
        parameters: &impl serde::Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            run_id: new_run_id(),
            timestamp_us: now_us(),
            git_rev: git_revision(),
            command: command.to_string(),
            parameters: serde_json::to_string(parameters)?,
        })
    }

    /// One row of this run.
    pub fn row(
        &self,
        model: &str,
        layer: Option<i64>,
        site: &str,
        method: &str,
        metric: &str,
        value: f64,
    ) -> ResultRow {
        ResultRow {
            run_id: self.run_id.clone(),
            timestamp_us: self.timestamp_us,
            git_rev: self.git_rev.clone(),
            command: self.command.clone(),
            model: model.to_string(),
            layer,
            site: site.to_string(),
            method: method.to_string(),
            metric: metric.to_string(),
            value,
            parameters: self.parameters.clone(),
        }
    }
}

/// A report that flattens into results-store rows (one per number; undefined numbers are left
/// out, never filled in).
pub trait ToRows {
    /// The rows of this report under `meta`; `model` labels reports that do not carry one.
    fn to_rows(&self, meta: &RunMeta, model: &str) -> Vec<ResultRow>;
}

/// The current git revision (short), or `"unknown"` outside a git checkout.
pub fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A new run id: UTC time plus process id, e.g. `20261123T201500123-4242`.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"),
        std::process::id()
    )
}

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn strings(rows: &[ResultRow], f: impl Fn(&ResultRow) -> &str) -> Vec<ByteArray> {
    rows.iter()
        .map(|r| ByteArray::from(f(r).as_bytes().to_vec()))
        .collect()
}

/// Writes `rows` as one new Parquet file in `results_dir` (atomically) and returns its path:
/// `<command>-<run_id>.parquet`, or `<command>-<run_id>-<n>.parquet` with the first free `n`
/// when the run already wrote a file (a sweep appends once per finished run). An existing file
/// is never replaced ([`sparsity_io::write_new`]), so no earlier row is ever lost. Errors on an
/// empty row set.
pub fn append_rows(results_dir: &Path, rows: &[ResultRow]) -> Result<PathBuf, ResultsError> {
    let first = rows.first().ok_or(ResultsError::Empty)?;
    let stem = format!("{}-{}", first.command, first.run_id).replace(
        |c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "_",
    );
    let buf = encode(rows).map_err(|e| ResultsError::Parquet {
        path: results_dir.join(format!("{stem}.parquet")),
        message: e.to_string(),
    })?;
    let name = |seq: u32| {
        if seq == 0 {
            format!("{stem}.parquet")
        } else {
            format!("{stem}-{seq}.parquet")
        }
    };
    Ok(sparsity_io::write_new(results_dir, name, &buf)?)
}

/// Reads every row of one results file back (files written by [`append_rows`]). A file that is
/// not Parquet, is corrupt, or has another schema than [`SCHEMA`] is an error naming it; a
/// corrupt file is never a panic (the fuzz test `tests/fuzz_results.rs`). Column chunks and the
/// row count are bounded by the file's size before any page is decoded.
///
/// The `parquet` crate (60.1) still panics on some corrupt pages instead of returning an error
/// (the fuzz test found `Decoder for dict should have been set` after a rewritten byte); such a
/// panic inside the decoder is caught here and returned as [`ResultsError::Read`].
pub fn read_rows(path: &Path) -> Result<Vec<ResultRow>, ResultsError> {
    let bad = |message: String| ResultsError::Read {
        path: path.to_path_buf(),
        message,
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_rows(path))) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(bad(format!(
                "corrupt Parquet file (the decoder failed: {what})"
            )))
        }
    }
}

fn decode_rows(path: &Path) -> Result<Vec<ResultRow>, ResultsError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let bad = |message: String| ResultsError::Read {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    let reader = SerializedFileReader::new(file).map_err(|e| bad(format!("Parquet: {e}")))?;
    let meta = reader.metadata();
    let expected = parse_message_type(SCHEMA).map_err(|e| bad(e.to_string()))?;
    let found = meta.file_metadata().schema();
    if found.get_fields().len() != expected.get_fields().len()
        || found
            .get_fields()
            .iter()
            .zip(expected.get_fields())
            .any(|(a, b)| a.name() != b.name() || a.get_physical_type() != b.get_physical_type())
    {
        return Err(bad(
            "not a results file: its schema differs from the results store's".into(),
        ));
    }
    // Row counts and column sizes come from the footer: check them against the file before any
    // page is decoded, so that no buffer is sized by a number the file merely claims.
    let mut rows_total: u64 = 0;
    for rg in meta.row_groups() {
        let rows = u64::try_from(rg.num_rows()).map_err(|_| bad("negative row count".into()))?;
        rows_total = rows_total.saturating_add(rows);
        for c in rg.columns() {
            // (`byte_range` asserts non-negative values: checked here first)
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            let (Ok(start), Ok(size)) = (u64::try_from(start), u64::try_from(c.compressed_size()))
            else {
                return Err(bad(format!(
                    "column `{}` has a negative offset or size",
                    c.column_path()
                )));
            };
            if start.saturating_add(size) > len {
                return Err(bad(format!(
                    "column `{}` claims bytes {start}..{} of a {len}-byte file",
                    c.column_path(),
                    start.saturating_add(size)
                )));
            }
        }
    }
    // Every row holds at least one byte per column in the file.
    if rows_total > len {
        return Err(bad(format!(
            "{rows_total} rows claimed by a {len}-byte file"
        )));
    }
    let text = |f: &Field, name: &str| match f {
        Field::Str(s) => Ok(s.clone()),
        other => Err(bad(format!(
            "column `{name}`: expected text, found {other}"
        ))),
    };
    // Grown as rows decode: a capacity from the footer's claim could ask for ~250 B per byte of
    // the file.
    let mut out = Vec::new();
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| bad(format!("Parquet: {e}")))?;
    for row in iter {
        let row = row.map_err(|e| bad(format!("Parquet: {e}")))?;
        let cols: Vec<(&String, &Field)> = row.get_column_iter().collect();
        if cols.len() != 11 {
            return Err(bad(format!(
                "a row of {} columns (11 expected)",
                cols.len()
            )));
        }
        let (c, n) = (|i: usize| cols[i].1, |i: usize| cols[i].0.as_str());
        out.push(ResultRow {
            run_id: text(c(0), n(0))?,
            timestamp_us: match c(1) {
                Field::TimestampMicros(t) | Field::Long(t) => *t,
                other => return Err(bad(format!("column `timestamp`: found {other}"))),
            },
            git_rev: text(c(2), n(2))?,
            command: text(c(3), n(3))?,
            model: text(c(4), n(4))?,
            layer: match c(5) {
                Field::Null => None,
                Field::Long(l) => Some(*l),
                other => return Err(bad(format!("column `layer`: found {other}"))),
            },
            site: text(c(6), n(6))?,
            method: text(c(7), n(7))?,
            metric: text(c(8), n(8))?,
            value: match c(9) {
                Field::Double(v) => *v,
                other => return Err(bad(format!("column `value`: found {other}"))),
            },
            parameters: text(c(10), n(10))?,
        });
    }
    Ok(out)
}

/// The rows as the bytes of one Parquet file.
fn encode(rows: &[ResultRow]) -> parquet::errors::Result<Vec<u8>> {
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let props = Arc::new(WriterProperties::builder().build());
    let mut buf = Vec::new();
    {
        let mut w = SerializedFileWriter::new(&mut buf, schema, props)?;
        let mut rg = w.next_row_group()?;
        let mut col = 0usize;
        while let Some(mut c) = rg.next_column()? {
            match col {
                1 => {
                    let v: Vec<i64> = rows.iter().map(|r| r.timestamp_us).collect();
                    c.typed::<Int64Type>().write_batch(&v, None, None)?;
                }
                5 => {
                    let v: Vec<i64> = rows.iter().filter_map(|r| r.layer).collect();
                    let def: Vec<i16> = rows.iter().map(|r| i16::from(r.layer.is_some())).collect();
                    c.typed::<Int64Type>().write_batch(&v, Some(&def), None)?;
                }
                9 => {
                    let v: Vec<f64> = rows.iter().map(|r| r.value).collect();
                    c.typed::<DoubleType>().write_batch(&v, None, None)?;
                }
                _ => {
                    let v = match col {
                        0 => strings(rows, |r| &r.run_id),
                        2 => strings(rows, |r| &r.git_rev),
                        3 => strings(rows, |r| &r.command),
                        4 => strings(rows, |r| &r.model),
                        6 => strings(rows, |r| &r.site),
                        7 => strings(rows, |r| &r.method),
                        8 => strings(rows, |r| &r.metric),
                        _ => strings(rows, |r| &r.parameters),
                    };
                    c.typed::<ByteArrayType>().write_batch(&v, None, None)?;
                }
            }
            c.close()?;
            col += 1;
        }
        rg.close()?;
        w.close()?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A sweep appends once per finished run under one process run id: every call's rows stay
    /// (the store once named the file after the run id alone, and each run replaced the last).
    #[test]
    fn appends_under_one_run_id_keep_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let meta = RunMeta::new("dsa-sweep", &serde_json::Value::Null).unwrap();
        let mut written = Vec::new();
        for run in 0..3 {
            let rows = vec![meta.row("m", Some(run), "L64", "dense", "final_val_loss", run as f64)];
            written.push((append_rows(dir.path(), &rows).unwrap(), rows));
        }
        let mut names: Vec<_> = written
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3, "{names:?}");
        for (path, rows) in &written {
            assert_eq!(&read_rows(path).unwrap(), rows);
        }
        let parquet_files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                    .unwrap_or(false)
            })
            .count();
        assert_eq!(parquet_files, 3, "no temporary file may stay behind");
    }
}
