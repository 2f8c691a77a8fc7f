//! Resolving a model argument: a directory path, or (feature `hub`) a Hugging Face model id looked
//! up in the local hub cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) without any
//! network access.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// Returns the directory holding `config.json` for `dir_or_id`: the path itself when it is a directory,
/// otherwise the snapshot directory of the model id in the local hub cache.
pub fn resolve_model_dir(dir_or_id: &str) -> Result<PathBuf> {
    let path = Path::new(dir_or_id);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let looks_like_id = !dir_or_id.is_empty()
        && !dir_or_id.starts_with('.')
        && !dir_or_id.starts_with('/')
        && dir_or_id.split('/').count() <= 2;
    if !looks_like_id {
        return Err(ModelError::MissingFile {
            path: path.into(),
            what: "model directory".into(),
        });
    }
    cached_snapshot(dir_or_id)
}

#[cfg(feature = "hub")]
fn cached_snapshot(id: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let not_cached = || ModelError::NotInCache {
        id: id.into(),
        cache: cache.path().clone(),
    };
    let config = cache
        .model(id.to_string())
        .get("config.json")
        .ok_or_else(not_cached)?;
    config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(not_cached)
}

#[cfg(not(feature = "hub"))]
fn cached_snapshot(id: &str) -> Result<PathBuf> {
    Err(ModelError::MissingFile {
        path: id.into(),
        what: "model directory (model ids are looked up in the Hugging Face cache only with \
               sparsity-models' `hub` feature)"
            .into(),
    })
}
