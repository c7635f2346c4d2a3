//! The learning rate schedule: linear warm-up, then constant, linear or cosine.

/// How the learning rate moves after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// Stays at the peak.
    Constant,
    /// Falls linearly to `min_ratio` × peak at the last step.
    Linear,
    /// Follows half a cosine down to `min_ratio` × peak at the last step.
    #[default]
    Cosine,
}

/// The learning rate of optimizer step `step` (from 0) of `total`: linear warm-up over
/// `warmup` steps to `peak`, then `schedule` down to `min_ratio` × `peak`.
pub fn learning_rate(
    step: usize,
    total: usize,
    warmup: usize,
    peak: f64,
    schedule: Schedule,
    min_ratio: f64,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = peak * min_ratio;
    match schedule {
        Schedule::Constant => peak,
        Schedule::Linear => peak - (peak - floor) * progress,
        Schedule::Cosine => {
            floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}
