//! Atomic file output: write to a temporary file beside the target, then rename.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoError, Result};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// flushed and renamed over `path`. Parent directories are created. On any error nothing is
/// left at `path` (an older file there stays untouched).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Like [`write_atomic`], but `fill` writes the contents into the temporary file (for output
/// that is produced by a writer, such as an image encoder or a Parquet writer). `path` is
/// replaced only when `fill` succeeds.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    filled_temp(path, fill)?.persist(path)
}

/// A temporary file beside `path` holding what `fill` wrote, synced to disk.
fn filled_temp(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<TempPath> {
    let io = |e| IoError::io(path, e);
    let tmp = temp_beside(path, ".tmp")?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(tmp.path())
        .map_err(io)?;
    fill(&mut file).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(tmp)
}

/// Writes `bytes` atomically to a file in `dir` that did not exist before: the first of
/// `name(0)`, `name(1)`, … that is free, and returns its path. An existing file is never replaced,
/// even by a concurrent writer choosing the same name: the complete temporary file is hard-linked
/// to the final name, which fails if the name is taken (then the next name is tried). Where the
/// file system has no hard links, the temporary file is renamed after a check that the name is
/// free (a writer racing for that same name in that same instant could then be replaced).
pub fn write_new(dir: &Path, name: impl Fn(u32) -> String, bytes: &[u8]) -> Result<PathBuf> {
    let first = dir.join(name(0));
    let tmp = filled_temp(&first, |f| f.write_all(bytes))?;
    let io = |e| IoError::io(&first, e);
    for seq in 0..100_000 {
        let target = dir.join(name(seq));
        match std::fs::hard_link(tmp.path(), &target) {
            Ok(()) => return Ok(target),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) if !target.exists() => {
                // No hard links here (some network and FAT file systems): rename instead.
                tmp.persist(&target)?;
                return Ok(target);
            }
            Err(e) => return Err(IoError::io(&target, e)),
        }
    }
    Err(io(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free file name after 100 000 tries",
    )))
}

/// A temporary file beside its target, removed on drop unless [`TempPath::persist`]ed.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    kept: bool,
}

impl TempPath {
    /// The temporary file's path (for writers that need a path, such as image backends).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary file over `target` (atomic on the same file system).
    pub fn persist(mut self, target: &Path) -> Result<()> {
        std::fs::rename(&self.path, target).map_err(|e| IoError::io(target, e))?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.kept {
            // Best effort: a leftover temporary file is harmless, never a half-written target.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates an empty temporary file in `path`'s directory (created if missing), named after
/// `path` with a unique part and `suffix` (e.g. `.png`, which some writers need), for a writer
/// that needs a path; [`TempPath::persist`] renames it over `path`, dropping it removes it.
pub fn temp_beside(path: &Path, suffix: &str) -> Result<TempPath> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io = |e| IoError::io(path, e);
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir).map_err(io)?;
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".{stem}.{}-{nanos}-{n}{suffix}", std::process::id());
        let candidate = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(_) => {
                return Ok(TempPath {
                    path: candidate,
                    kept: false,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(e)),
        }
    }
    Err(io(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary file name beside the target",
    )))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_on_success() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| IoError::io(Path::new("."), e))?;
        let p = dir.path().join("sub/out.txt");
        write_atomic(&p, b"one")?;
        assert_eq!(std::fs::read(&p).ok().as_deref(), Some(&b"one"[..]));
        let failed = write_atomic_with(&p, |f| {
            f.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).ok().as_deref(), Some(&b"one"[..]));
        let leftovers = std::fs::read_dir(p.parent().unwrap_or(dir.path()))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 1, "no temporary file may stay behind");
        Ok(())
    }

    #[test]
    fn write_new_never_replaces_a_file() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| IoError::io(Path::new("."), e))?;
        let name = |seq: u32| {
            if seq == 0 {
                "run.bin".to_string()
            } else {
                format!("run-{seq}.bin")
            }
        };
        let paths: Vec<PathBuf> = (0..3u8)
            .map(|i| write_new(dir.path(), name, &[i; 4]))
            .collect::<Result<_>>()?;
        let names: Vec<String> = paths
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["run.bin", "run-1.bin", "run-2.bin"]);
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(
                std::fs::read(p).ok(),
                Some(vec![i as u8; 4]),
                "{}",
                p.display()
            );
        }
        let files = std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(files, 3, "no temporary file may stay behind");
        Ok(())
    }
}
