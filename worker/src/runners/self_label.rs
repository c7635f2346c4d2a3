//! `self_label` jobs: label dialogues with a causal LM (see [`crate::runners::labelling`]),
//! for later jobs to retrieve as examples or retrain on.

use std::sync::Arc;

use async_trait::async_trait;
use labelfleet_core::job::{Job, JobKind};

use crate::runner::{JobContext, JobFailure, JobOutput, JobRunner};
use crate::runners::labelling::label;
use crate::runners::models::ModelCache;

/// Runs `self_label` jobs with the worker's models.
pub struct SelfLabelRunner {
    models: Arc<ModelCache>,
}

impl SelfLabelRunner {
    /// A runner that loads its models through `models`.
    pub fn new(models: Arc<ModelCache>) -> SelfLabelRunner {
        SelfLabelRunner { models }
    }
}

#[async_trait]
impl JobRunner for SelfLabelRunner {
    fn kind(&self) -> JobKind {
        JobKind::SelfLabel
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<JobOutput, JobFailure> {
        Ok(label(job, ctx, &self.models).await?.output)
    }
}
