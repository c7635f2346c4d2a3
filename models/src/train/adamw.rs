//! AdamW with moments that can be saved and restored.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::kernels::adamw::{AdamWUpdate, update_in_place};
use crate::{Kernels, ModelError};

/// AdamW's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not norms or biases).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW whose moments can be saved and restored, so that a resumed run takes the same
/// steps as one that never stopped (candle-nn's AdamW keeps its state private).
pub struct AdamW {
    params: Vec<(String, Var)>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    steps: usize,
    config: AdamWConfig,
    kernels: Kernels,
}

impl AdamW {
    /// An optimizer for `params` with zeroed moments.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<AdamW, ModelError> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let first = params
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<Result<_, _>>()?;
        let second = params
            .iter()
            .map(|(_, v)| zeros(v))
            .collect::<Result<_, _>>()?;
        Ok(AdamW {
            params,
            first,
            second,
            steps: 0,
            config,
            kernels: Kernels::Native,
        })
    }

    /// The same optimizer updating with `kernels`: [`Kernels::Native`] (the default)
    /// updates parameters on the CPU in place (`kernels::adamw`);
    /// [`Kernels::Generic`] uses tensor operations, as on a GPU.
    pub fn with_kernels(mut self, kernels: Kernels) -> AdamW {
        self.kernels = kernels;
        self
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The parameters it updates.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<(), ModelError> {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let (fix1, fix2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(var) else {
                continue;
            };
            let g = g.detach();
            let theta = var.as_tensor().detach();
            let decays = c.weight_decay > 0.0 && theta.rank() >= 2;
            if self.kernels.native_on(theta.device()) {
                let update = AdamWUpdate {
                    beta1: c.beta1 as f32,
                    beta2: c.beta2 as f32,
                    eps: c.eps as f32,
                    lr: lr as f32,
                    fix1: fix1 as f32,
                    fix2: fix2 as f32,
                    keep: if decays {
                        (1.0 - lr * c.weight_decay) as f32
                    } else {
                        1.0
                    },
                };
                if update_in_place(&theta, &self.first[i], &self.second[i], &g, update)? {
                    continue;
                }
            }
            let m = ((&self.first[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.second[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / fix1)? / ((&v / fix2)?.sqrt()? + c.eps)?)?;
            let decayed = if decays {
                (&theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta
            };
            var.set(&(decayed - (update * lr)?)?)?;
            self.first[i] = m;
            self.second[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors (`first.NAME`, `second.NAME`) for a checkpoint:
    /// copies, since the moments are updated in place after this.
    pub fn state(&self) -> Result<HashMap<String, Tensor>, ModelError> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("first.{name}"), self.first[i].copy()?);
            out.insert(format!("second.{name}"), self.second[i].copy()?);
        }
        Ok(out)
    }

    /// Restores moments saved by [`AdamW::state`] after `steps` steps.
    pub fn restore(
        &mut self,
        state: &HashMap<String, Tensor>,
        steps: usize,
    ) -> Result<(), ModelError> {
        for (i, (name, _)) in self.params.iter().enumerate() {
            let get = |prefix: &str| {
                state
                    .get(&format!("{prefix}.{name}"))
                    .cloned()
                    .ok_or_else(|| {
                        ModelError::Format(format!("the optimizer state has no `{prefix}.{name}`"))
                    })
            };
            // Copies, which the in-place update may then change.
            self.first[i] = get("first")?.copy()?;
            self.second[i] = get("second")?.copy()?;
        }
        self.steps = steps;
        Ok(())
    }
}
