//! The training loop of a `retrain` job: optimizer steps over a seeded data order,
//! validation every `eval_every` steps, and events the runner turns into artifacts
//! (resumable checkpoints, the best model so far).
//!
//! The data order is a function of the seed and the step alone, and the checkpoint
//! holds the parameters and AdamW's moments, so a run resumed at step N takes the very
//! steps an uninterrupted run takes after step N.

use std::time::Instant;

use labelfleet_core::job::{Schedule, TrainingSpec};
use labelfleet_models::TokenizedExample;
use labelfleet_models::train::{
    self, AdamW, StepReport, TrainableLm, learning_rate, optimizer_step,
};
use serde::{Deserialize, Serialize};

use crate::runner::{JobFailure, Progress};
use labelfleet_core::rng::shuffle;

/// One optimizer step on the training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Steps done, this one included.
    pub step: usize,
    /// Mean loss per completion token over the step's examples.
    pub loss: f64,
    /// The learning rate the step used.
    pub learning_rate: f64,
    /// The gradients' global norm before clipping.
    pub grad_norm: f64,
}

/// A validation measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidPoint {
    /// Steps done when it was measured.
    pub step: usize,
    /// Mean loss per completion token over the validation set.
    pub loss: f64,
}

/// Everything about a run but its tensors: saved with every checkpoint, and the
/// training-curve artifact at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunState {
    /// The job config the run belongs to; a checkpoint of another config is ignored.
    pub config_hash: String,
    /// Optimizer steps done.
    pub step: usize,
    /// Every step's loss.
    pub curve: Vec<CurvePoint>,
    /// Validation losses.
    pub valid: Vec<ValidPoint>,
    /// The lowest validation loss so far.
    pub best: Option<ValidPoint>,
    /// Seconds spent training, over every attempt.
    pub seconds: f64,
    /// Tokens (prompt and completion) run through the model in training steps.
    pub tokens: u64,
    /// Which of the two checkpoint slots holds this state's tensors.
    pub slot: u8,
}

/// What the loop asks the runner to do.
pub enum Event<'a> {
    /// Save a resumable checkpoint of this state.
    Checkpoint(&'a RunState, &'a TrainableLm, &'a AdamW),
    /// The model has just reached its lowest validation loss: keep it.
    NewBest(&'a TrainableLm),
}

/// A run: the model, its optimizer and its data.
pub struct TrainingRun {
    /// The settings.
    pub spec: TrainingSpec,
    /// The model.
    pub lm: TrainableLm,
    /// The optimizer.
    pub optimizer: AdamW,
    /// Training examples.
    pub train: Vec<TokenizedExample>,
    /// Validation examples.
    pub valid: Vec<TokenizedExample>,
    /// Progress so far.
    pub state: RunState,
}

/// The training examples in a seeded order that is reshuffled every epoch.
struct Order {
    seed: u64,
    epoch: Option<usize>,
    permutation: Vec<usize>,
}

impl Order {
    fn index(&mut self, position: usize) -> usize {
        let n = self.permutation.len();
        let epoch = position / n;
        if self.epoch != Some(epoch) {
            self.permutation = (0..n).collect();
            shuffle(&mut self.permutation, self.seed.wrapping_add(epoch as u64));
            self.epoch = Some(epoch);
        }
        self.permutation[position % n]
    }
}

fn schedule(s: Schedule) -> train::Schedule {
    match s {
        Schedule::Constant => train::Schedule::Constant,
        Schedule::Linear => train::Schedule::Linear,
        Schedule::Cosine => train::Schedule::Cosine,
    }
}

fn model_error(e: labelfleet_models::ModelError) -> JobFailure {
    JobFailure::new(format!("training failed: {e}"))
}

/// The mean loss per completion token of `lm` over `examples`, in batches.
pub fn mean_loss(
    lm: &TrainableLm,
    examples: &[TokenizedExample],
    batch_size: usize,
) -> Result<Option<f64>, JobFailure> {
    train::mean_completion_loss(&lm.model, examples, batch_size, &mut |_, _| {})
        .map_err(model_error)
}

impl TrainingRun {
    /// Trains until `spec.steps`, handing checkpoints and new bests to `on_event`.
    /// `check` is called between steps: when it fails because the worker is stopping,
    /// the run saves a checkpoint first, so the next delivery resumes from here; when
    /// the job was cancelled (its lease is gone) it saves nothing. Either way it
    /// returns that failure.
    pub fn run(
        &mut self,
        every_steps: Option<usize>,
        every_seconds: Option<u64>,
        progress: &Progress,
        check: &dyn Fn() -> Result<(), JobFailure>,
        on_event: &mut dyn FnMut(Event<'_>) -> Result<(), JobFailure>,
    ) -> Result<(), JobFailure> {
        if self.train.is_empty() {
            return Err(JobFailure::new("no training examples"));
        }
        let spec = self.spec.clone();
        let mut order = Order {
            seed: spec.seed,
            epoch: None,
            permutation: vec![0; self.train.len()],
        };
        let mut last_checkpoint = Instant::now();
        let mut last_log = Instant::now();
        let steps_at_start = self.state.step;
        let tokens_at_start = self.state.tokens;
        let started = Instant::now();
        while self.state.step < spec.steps {
            if let Err(mut stop) = check() {
                if stop.interrupted {
                    on_event(Event::Checkpoint(&self.state, &self.lm, &self.optimizer))?;
                    stop.message = format!(
                        "{} (at step {}, checkpointed: the next delivery resumes there)",
                        stop.message, self.state.step
                    );
                }
                return Err(stop);
            }
            let step_started = Instant::now();
            let step = self.state.step;
            let micro: Vec<Vec<&TokenizedExample>> = (0..spec.grad_accumulation)
                .map(|m| {
                    let first = (step * spec.grad_accumulation + m) * spec.batch_size;
                    (first..first + spec.batch_size)
                        .map(|p| &self.train[order.index(p)])
                        .collect()
                })
                .collect();
            let lr = learning_rate(
                step,
                spec.steps,
                spec.warmup_steps,
                spec.learning_rate,
                schedule(spec.schedule),
                spec.min_lr_ratio,
            );
            let StepReport {
                loss,
                grad_norm,
                tokens,
            } = optimizer_step(
                &self.lm.model,
                &mut self.optimizer,
                &micro,
                spec.max_grad_norm,
                lr,
            )
            .map_err(model_error)?;
            self.state.tokens += tokens as u64;
            if !loss.is_finite() {
                return Err(JobFailure::new(format!(
                    "the loss became {loss} at step {}; lower `training.learning_rate` or set `max_grad_norm`",
                    step + 1
                )));
            }
            self.state.step += 1;
            self.state.seconds += step_started.elapsed().as_secs_f64();
            self.state.curve.push(CurvePoint {
                step: self.state.step,
                loss,
                learning_rate: lr,
                grad_norm,
            });
            let last = self.state.step == spec.steps;
            if self.state.step.is_multiple_of(spec.eval_every) || last {
                self.validate(on_event)?;
            }
            let steps_due = every_steps.is_some_and(|n| self.state.step.is_multiple_of(n));
            let time_due = every_seconds.is_some_and(|s| last_checkpoint.elapsed().as_secs() >= s);
            if !last && (steps_due || time_due) {
                on_event(Event::Checkpoint(&self.state, &self.lm, &self.optimizer))?;
                last_checkpoint = Instant::now();
            }
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            let rate = (self.state.step - steps_at_start) as f64 / elapsed;
            let eta = (spec.steps - self.state.step) as f64 / rate.max(1e-9);
            progress.set(format!(
                "step {}/{} · loss {loss:.3} · {rate:.2} steps/s · {:.0} tok/s · ETA {:.0} s",
                self.state.step,
                spec.steps,
                (self.state.tokens - tokens_at_start) as f64 / elapsed,
                eta
            ));
            if last_log.elapsed().as_secs() >= 10 || last {
                tracing::info!(
                    step = self.state.step,
                    steps = spec.steps,
                    loss = format!("{loss:.4}"),
                    steps_per_second = format!("{rate:.2}"),
                    eta_seconds = eta.round(),
                    "training"
                );
                last_log = Instant::now();
            }
        }
        Ok(())
    }

    fn validate(
        &mut self,
        on_event: &mut dyn FnMut(Event<'_>) -> Result<(), JobFailure>,
    ) -> Result<(), JobFailure> {
        let Some(loss) = mean_loss(&self.lm, &self.valid, self.spec.batch_size)? else {
            return Ok(());
        };
        let point = ValidPoint {
            step: self.state.step,
            loss,
        };
        self.state.valid.push(point);
        tracing::info!(
            step = point.step,
            valid_loss = format!("{loss:.4}"),
            "validated"
        );
        if self.state.best.is_none_or(|b| loss < b.loss) {
            self.state.best = Some(point);
            on_event(Event::NewBest(&self.lm))?;
        }
        Ok(())
    }
}
