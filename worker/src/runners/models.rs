//! The worker's one model cache: loading a model takes seconds and a worker runs many
//! jobs with the same models, so loaded models are kept across jobs, for every runner.
//!
//! The cache is bounded by memory (`worker --model-memory GB`): before a model is
//! loaded, and again once its real size is known, the least recently used models are
//! let go until what is held fits. A model that a running job still uses stays in
//! memory until that job drops it, whatever the bound; a model larger than the bound
//! is still loaded (its job needs it) and is the first to go next time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use labelfleet_core::job::{ModelRef, WeightFormat};
use labelfleet_models::{CausalLm, ModelSource, SentenceEmbedder, load_causal_lm, parse_device};

use crate::runner::JobFailure;

/// Bytes in a gigabyte, as `--model-memory` counts them.
pub const GB: f64 = 1e9;

/// A model's identity in the cache: what it is, where it is, where it runs, how it is
/// held.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CacheKey {
    embedder: bool,
    path: PathBuf,
    device: String,
    weights: WeightFormat,
}

#[derive(Clone)]
enum Loaded {
    Lm(Arc<CausalLm>),
    Embedder(Arc<SentenceEmbedder>),
}

struct Entry {
    key: CacheKey,
    model: Loaded,
    bytes: u64,
    last_used: u64,
}

#[derive(Default)]
struct Held {
    entries: Vec<Entry>,
    clock: u64,
}

impl Held {
    fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Lets the least recently used models go (never `keep`) until `extra` more bytes
    /// fit under `bound`.
    fn make_room(&mut self, extra: u64, bound: u64, keep: Option<&CacheKey>) {
        while self.bytes() + extra > bound {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| Some(&e.key) != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            let Some(i) = oldest else { break };
            let gone = self.entries.remove(i);
            tracing::info!(
                model = %gone.key.path.display(),
                mib = gone.bytes >> 20,
                "model cache: let go of the least recently used model"
            );
        }
    }
}

/// Causal LMs and embedders, kept across jobs within a memory bound. One per worker,
/// shared by every runner.
pub struct ModelCache {
    bound: u64,
    held: Mutex<Held>,
}

impl Default for ModelCache {
    /// Bounded by [`default_bound`] for the CPU.
    fn default() -> ModelCache {
        ModelCache::new(default_bound(None))
    }
}

/// Half of this machine's memory, or, for a worker pinned to a GPU, half of that GPU's
/// free memory: room for a few models beside the batches that run on them.
pub fn default_bound(device: Option<&str>) -> u64 {
    if let Some(ordinal) = device.and_then(crate::gpu::cuda_ordinal)
        && let Ok(free) = crate::gpu::free_memory(ordinal)
    {
        return free / 2;
    }
    crate::memory::total_memory().map_or(8_000_000_000, |total| total / 2)
}

/// The local folder (or file) `model` names, fetched from the Hugging Face cache when it
/// names an id.
pub(crate) fn resolve(model: &ModelRef) -> Result<PathBuf, JobFailure> {
    let source = match (&model.path, &model.id) {
        (Some(path), _) => ModelSource::Local(PathBuf::from(path)),
        (None, Some(id)) => ModelSource::HubCache {
            id: id.clone(),
            revision: model.revision.clone(),
            file: model.file.clone(),
        },
        (None, None) => return Err(JobFailure::new("the model names neither `path` nor `id`")),
    };
    source.resolve().map_err(|e| JobFailure::new(e.to_string()))
}

/// Bytes of the weight files at `path` (a folder's `*.safetensors` and `*.gguf`, or the
/// file itself): what a model is expected to take before it is loaded.
fn size_on_disk(path: &Path) -> u64 {
    if path.is_file() {
        return std::fs::metadata(path).map_or(0, |m| m.len());
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".safetensors") || name.ends_with(".gguf")
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

impl ModelCache {
    /// A cache that holds at most `bound` bytes of models (see the module doc).
    pub fn new(bound: u64) -> ModelCache {
        ModelCache {
            bound,
            held: Mutex::new(Held::default()),
        }
    }

    /// The bound, in bytes.
    pub fn bound(&self) -> u64 {
        self.bound
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model under `key`, marked as just used.
    fn hit(&self, key: &CacheKey) -> Option<Loaded> {
        let mut held = self.lock();
        held.clock += 1;
        let now = held.clock;
        let entry = held.entries.iter_mut().find(|e| &e.key == key)?;
        entry.last_used = now;
        Some(entry.model.clone())
    }

    /// The model under `key`, loaded by `load` (which also weighs it) on a miss.
    fn get_or_load(
        &self,
        key: CacheKey,
        load: impl FnOnce() -> Result<(Loaded, u64), JobFailure>,
    ) -> Result<Loaded, JobFailure> {
        if let Some(model) = self.hit(&key) {
            return Ok(model);
        }
        self.lock()
            .make_room(size_on_disk(&key.path), self.bound, None);
        let (model, bytes) = load()?;
        let mut held = self.lock();
        held.clock += 1;
        let now = held.clock;
        // Another job may have loaded it meanwhile: keep the first.
        if let Some(entry) = held.entries.iter_mut().find(|e| e.key == key) {
            entry.last_used = now;
            return Ok(entry.model.clone());
        }
        held.entries.push(Entry {
            key: key.clone(),
            model: model.clone(),
            bytes,
            last_used: now,
        });
        held.make_room(0, self.bound, Some(&key));
        if bytes > self.bound {
            tracing::warn!(
                model = %key.path.display(),
                mib = bytes >> 20,
                bound_mib = self.bound >> 20,
                "the model alone is larger than the model cache's bound (`worker --model-memory`)"
            );
        }
        tracing::info!(
            model = %key.path.display(),
            mib = bytes >> 20,
            held_models = held.entries.len(),
            held_bytes = held.bytes(),
            bound_bytes = self.bound,
            "model cache"
        );
        Ok(model)
    }

    /// The causal LM `model` names, loaded on first use. Blocking.
    pub fn causal_lm(&self, model: &ModelRef) -> Result<Arc<CausalLm>, JobFailure> {
        let path = resolve(model)?;
        let key = CacheKey {
            embedder: false,
            path: path.clone(),
            device: model.device.clone(),
            weights: model.weight_format(),
        };
        let loaded = self.get_or_load(key, || {
            let device =
                parse_device(&model.device).map_err(|e| JobFailure::new(e.to_string()))?;
            let started = std::time::Instant::now();
            let lm = load_causal_lm(&path, model.weight_format(), &device).map_err(|e| {
                JobFailure::new(format!("loading the model at {}: {e}", path.display()))
            })?;
            tracing::info!(model = %path.display(), device = %model.device, seconds = started.elapsed().as_secs_f64(), "causal LM loaded");
            let bytes = lm.model.weight_bytes();
            Ok((Loaded::Lm(Arc::new(lm)), bytes))
        })?;
        match loaded {
            Loaded::Lm(lm) => Ok(lm),
            Loaded::Embedder(_) => unreachable!("keys of causal LMs hold causal LMs"),
        }
    }

    /// The sentence embedder `model` names, loaded on first use (weighed by its weight
    /// files). Blocking.
    pub fn embedder(&self, model: &ModelRef) -> Result<Arc<SentenceEmbedder>, JobFailure> {
        let path = resolve(model)?;
        let key = CacheKey {
            embedder: true,
            path: path.clone(),
            device: model.device.clone(),
            weights: WeightFormat::F32,
        };
        let loaded = self.get_or_load(key, || {
            let device = parse_device(&model.device).map_err(|e| JobFailure::new(e.to_string()))?;
            let embedder = SentenceEmbedder::load(&path, &device).map_err(|e| {
                JobFailure::new(format!("loading the retriever at {}: {e}", path.display()))
            })?;
            Ok((Loaded::Embedder(Arc::new(embedder)), size_on_disk(&path)))
        })?;
        match loaded {
            Loaded::Embedder(e) => Ok(e),
            Loaded::Lm(_) => unreachable!("keys of embedders hold embedders"),
        }
    }

    /// How many models are held now.
    pub fn held_models(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(dir: &Path, seed: u64) -> ModelRef {
        let texts: Vec<String> = (0..40)
            .map(|i| format!("i need a taxi to the station at {i}:30"))
            .collect();
        labelfleet_models::tiny::write_tiny_model(dir, &texts, seed).unwrap();
        serde_json::from_value(serde_json::json!({"path": dir})).unwrap()
    }

    /// With room for two models, a third lets the least recently used one go; a hit
    /// counts as a use.
    #[test]
    fn the_least_recently_used_model_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let models: Vec<ModelRef> = (0..3)
            .map(|i| tiny(&dir.path().join(format!("m{i}")), i))
            .collect();
        let one = ModelCache::new(u64::MAX)
            .causal_lm(&models[0])
            .unwrap()
            .model
            .weight_bytes();
        let cache = ModelCache::new(2 * one + one / 2);
        let first = cache.causal_lm(&models[0]).unwrap();
        cache.causal_lm(&models[1]).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.causal_lm(&models[0]).unwrap()));
        assert_eq!(cache.held_models(), 2);
        // models[1] is now the least recently used.
        cache.causal_lm(&models[2]).unwrap();
        assert_eq!(cache.held_models(), 2);
        assert!(Arc::ptr_eq(&first, &cache.causal_lm(&models[0]).unwrap()));
        let again = cache.causal_lm(&models[1]).unwrap();
        assert_eq!(cache.held_models(), 2);
        assert!(Arc::ptr_eq(&again, &cache.causal_lm(&models[1]).unwrap()));
    }

    /// A model larger than the bound still loads (its job needs it) and goes when the
    /// next one comes.
    #[test]
    fn a_model_larger_than_the_bound_loads_and_goes_next() {
        let dir = tempfile::tempdir().unwrap();
        let a = tiny(&dir.path().join("a"), 1);
        let b = tiny(&dir.path().join("b"), 2);
        let cache = ModelCache::new(1);
        cache.causal_lm(&a).unwrap();
        assert_eq!(cache.held_models(), 1);
        cache.causal_lm(&b).unwrap();
        assert_eq!(cache.held_models(), 1);
    }

    /// A job that asks for a GPU on a worker without one fails with the reason and
    /// what to do, for the causal LM and the retriever alike, and nothing is held.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_gpu_job_on_a_worker_without_cuda_fails_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = tiny(dir.path(), 3);
        model.device = "cuda:0".into();
        let cache = ModelCache::new(u64::MAX);
        let lm = cache.causal_lm(&model).map(|_| ()).unwrap_err().to_string();
        let embedder = cache.embedder(&model).map(|_| ()).unwrap_err().to_string();
        for err in [lm, embedder] {
            assert!(err.contains("`cuda:0`"), "{err}");
            assert!(err.contains("no CUDA support"), "{err}");
            assert!(err.contains("--features cuda"), "{err}");
        }
        assert_eq!(cache.held_models(), 0);
    }
}
