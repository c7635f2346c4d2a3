//! Finding a model's files: a local path, or a model id (and revision) in the Hugging
//! Face cache. Nothing is downloaded: workers run where the hub may not be reachable,
//! so a model must be put in place (or in the cache) before jobs use it.

use std::path::{Path, PathBuf};

use crate::ModelError;

/// Where a model is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// A local folder, or a `.gguf` file.
    Local(PathBuf),
    /// A Hugging Face model id in the local Hugging Face cache (`HF_HUB_CACHE`,
    /// `HF_HOME`, or `~/.cache/huggingface/hub`).
    HubCache {
        /// The model id, `owner/name`.
        id: String,
        /// Branch, tag or commit; `main` when absent.
        revision: Option<String>,
        /// The GGUF file in the repository, when the model is one; otherwise the
        /// snapshot folder is used.
        file: Option<String>,
    },
}

impl ModelSource {
    /// The local file or folder holding the model.
    pub fn resolve(&self) -> Result<PathBuf, ModelError> {
        match self {
            ModelSource::Local(path) if path.exists() => Ok(path.clone()),
            ModelSource::Local(path) => Err(ModelError::NotFound(format!(
                "model path {} does not exist (paths are relative to the worker's working \
                 directory; `scripts/fetch-models.sh` fetches the test models)",
                path.display()
            ))),
            ModelSource::HubCache { id, revision, file } => {
                let revision = revision.clone().unwrap_or_else(|| "main".to_string());
                // hf-hub reads HF_HOME only; the Python tools also honour HF_HUB_CACHE.
                let cache = match std::env::var_os("HF_HUB_CACHE") {
                    Some(dir) => hf_hub::Cache::new(PathBuf::from(dir)),
                    None => hf_hub::Cache::from_env(),
                };
                let repo = hf_hub::Repo::with_revision(
                    id.clone(),
                    hf_hub::RepoType::Model,
                    revision.clone(),
                );
                let wanted = file.as_deref().unwrap_or("config.json");
                // A branch or tag is looked up through refs/; a commit names its
                // snapshot folder directly.
                let by_commit = cache
                    .path()
                    .join(repo.folder_name())
                    .join("snapshots")
                    .join(&revision)
                    .join(wanted);
                let found = cache
                    .repo(repo)
                    .get(wanted)
                    .or_else(|| by_commit.exists().then_some(by_commit));
                match found {
                    Some(found) if file.is_some() => Ok(found),
                    Some(config) => Ok(config.parent().map(Path::to_path_buf).unwrap_or(config)),
                    None => Err(ModelError::NotFound(format!(
                        "{id}@{revision}: `{wanted}` is not in the Hugging Face cache at {}; \
                         download it there first (for example `huggingface-cli download {id} \
                         --revision {revision}`), or give a local `path`",
                        cache.path().display()
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_in_the_hugging_face_cache_is_found_by_id_and_revision() {
        let cache = tempfile::tempdir().unwrap();
        // The cache layout hf-hub reads: refs/<revision> names a snapshot folder.
        let repo = cache.path().join("models--owner--tiny");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        let snapshot = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::write(snapshot.join("config.json"), "{}").unwrap();
        std::fs::write(snapshot.join("tiny.gguf"), "").unwrap();
        // SAFETY: no other test reads HF_HUB_CACHE.
        unsafe { std::env::set_var("HF_HUB_CACHE", cache.path()) };
        let source = |file: Option<&str>, revision: Option<&str>| ModelSource::HubCache {
            id: "owner/tiny".into(),
            revision: revision.map(str::to_string),
            file: file.map(str::to_string),
        };
        assert_eq!(source(None, None).resolve().unwrap(), snapshot);
        assert_eq!(
            source(Some("tiny.gguf"), Some("main")).resolve().unwrap(),
            snapshot.join("tiny.gguf")
        );
        assert_eq!(source(None, Some("abc123")).resolve().unwrap(), snapshot);
        let missing = source(None, Some("v2")).resolve().unwrap_err().to_string();
        assert!(
            missing.contains("owner/tiny@v2") && missing.contains("not in the Hugging Face cache"),
            "{missing}"
        );
        let local = ModelSource::Local("/nonexistent/model".into())
            .resolve()
            .unwrap_err();
        assert!(local.to_string().contains("does not exist"));
    }
}
