//! Models kept across jobs: loading takes seconds, and a worker runs many jobs with the
//! same models.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use labelfleet_core::job::{ModelRef, WeightFormat};
use labelfleet_models::{CausalLm, ModelSource, SentenceEmbedder, load_causal_lm, parse_device};

use crate::runner::JobFailure;

/// A model's identity in the cache: where it is, where it runs, how it is held.
type CacheKey = (PathBuf, String, WeightFormat);

/// Causal LMs and embedders by [`CacheKey`].
#[derive(Default)]
pub struct ModelCache {
    lms: Mutex<HashMap<CacheKey, Arc<CausalLm>>>,
    embedders: Mutex<HashMap<CacheKey, Arc<SentenceEmbedder>>>,
}

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

fn weight_format(format: WeightFormat) -> labelfleet_models::WeightFormat {
    match format {
        WeightFormat::Stored => labelfleet_models::WeightFormat::Stored,
        WeightFormat::Q8_0 => labelfleet_models::WeightFormat::Q8_0,
        WeightFormat::F32 => labelfleet_models::WeightFormat::F32,
        WeightFormat::F16 => labelfleet_models::WeightFormat::F16,
        WeightFormat::Bf16 => labelfleet_models::WeightFormat::Bf16,
    }
}

impl ModelCache {
    /// The causal LM `model` names, loaded on first use. Blocking.
    pub fn causal_lm(&self, model: &ModelRef) -> Result<Arc<CausalLm>, JobFailure> {
        let path = resolve(model)?;
        let key = (path.clone(), model.device.clone(), model.weights);
        if let Some(lm) = self.lms.lock().expect("model cache").get(&key) {
            return Ok(lm.clone());
        }
        let device = parse_device(&model.device).map_err(|e| JobFailure::new(e.to_string()))?;
        let started = std::time::Instant::now();
        let lm = load_causal_lm(&path, weight_format(model.weights), &device).map_err(|e| {
            JobFailure::new(format!("loading the model at {}: {e}", path.display()))
        })?;
        tracing::info!(model = %path.display(), device = %model.device, seconds = started.elapsed().as_secs_f64(), "causal LM loaded");
        let lm = Arc::new(lm);
        self.lms
            .lock()
            .expect("model cache")
            .insert(key, lm.clone());
        Ok(lm)
    }

    /// The sentence embedder `model` names, loaded on first use. Blocking.
    pub fn embedder(&self, model: &ModelRef) -> Result<Arc<SentenceEmbedder>, JobFailure> {
        let path = resolve(model)?;
        let key = (path.clone(), model.device.clone(), WeightFormat::F32);
        if let Some(e) = self.embedders.lock().expect("model cache").get(&key) {
            return Ok(e.clone());
        }
        let device = parse_device(&model.device).map_err(|e| JobFailure::new(e.to_string()))?;
        let embedder = SentenceEmbedder::load(&path, &device).map_err(|e| {
            JobFailure::new(format!("loading the retriever at {}: {e}", path.display()))
        })?;
        let embedder = Arc::new(embedder);
        self.embedders
            .lock()
            .expect("model cache")
            .insert(key, embedder.clone());
        Ok(embedder)
    }
}
