//! Resolving a model argument: a directory path, or a Hugging Face model id looked up in the local hub
//! cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`) without any network access.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// Returns the directory holding `config.json` for `dir_or_id`: the path itself when it is a directory,
/// otherwise the snapshot directory of the model id in the local hub cache.
pub fn resolve_model_dir(dir_or_id: &str) -> Result<PathBuf> {
    let path = Path::new(dir_or_id);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let cache = hf_hub::Cache::from_env();
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
    let repo = cache.model(dir_or_id.to_string());
    match repo.get("config.json") {
        Some(config) => {
            config
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| ModelError::NotInCache {
                    id: dir_or_id.into(),
                    cache: cache.path().clone(),
                })
        }
        None => Err(ModelError::NotInCache {
            id: dir_or_id.into(),
            cache: cache.path().clone(),
        }),
    }
}
