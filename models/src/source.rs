//! Finding a model's files: a local path, or a model id (and revision) in the Hugging
//! Face cache. Nothing is downloaded: workers run where the hub may not be reachable,
//! so a model must be put in place (or in the cache) before jobs use it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Where a model comes from, as job files write it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// A local folder, or a `.gguf` file. Relative to the worker's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A Hugging Face model id, looked up in the local Hugging Face cache
    /// (`HF_HUB_CACHE`, `HF_HOME`, or `~/.cache/huggingface/hub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The revision (branch, tag or commit) of `id`; `main` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// With `id`: the GGUF file in the repository, when it holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl ModelSource {
    /// A model at a local path.
    pub fn local(path: impl Into<String>) -> ModelSource {
        ModelSource {
            path: Some(path.into()),
            id: None,
            revision: None,
            file: None,
        }
    }

    /// Checks that exactly one of `path` and `id` is given; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.path, &self.id) {
            (Some(_), Some(_)) => Err("give `path` or `id`, not both".into()),
            (None, None) => Err("missing: give `path` (a local folder or .gguf file) or `id` (a Hugging Face model id in the local cache)".into()),
            (Some(_), None) if self.revision.is_some() || self.file.is_some() => {
                Err("`revision` and `file` go with `id`, not `path`".into())
            }
            _ => Ok(()),
        }
    }

    /// The local file or folder holding the model.
    pub fn resolve(&self) -> Result<PathBuf, ModelError> {
        if let Some(path) = &self.path {
            let path = PathBuf::from(path);
            return if path.exists() {
                Ok(path)
            } else {
                Err(ModelError::NotFound(format!(
                    "model path {} does not exist (paths are relative to the worker's working \
                     directory; `scripts/fetch-models.sh` fetches the test models)",
                    path.display()
                )))
            };
        }
        let id = self
            .id
            .as_deref()
            .ok_or_else(|| ModelError::Invalid("a model source needs `path` or `id`".into()))?;
        let revision = self.revision.clone().unwrap_or_else(|| "main".to_string());
        let cache = hf_hub::Cache::from_env();
        let repo = cache.repo(hf_hub::Repo::with_revision(
            id.to_string(),
            hf_hub::RepoType::Model,
            revision.clone(),
        ));
        let wanted = self.file.as_deref().unwrap_or("config.json");
        match repo.get(wanted) {
            Some(file) if self.file.is_some() => Ok(file),
            Some(config) => Ok(config.parent().map(Path::to_path_buf).unwrap_or(config)),
            None => Err(ModelError::NotFound(format!(
                "{id}@{revision}: `{wanted}` is not in the Hugging Face cache at {}; download it \
                 there first (for example `huggingface-cli download {id} --revision {revision}`), \
                 or give a local `path`",
                cache.path().display()
            ))),
        }
    }
}
