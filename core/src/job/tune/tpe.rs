//! Choosing a sweep's points: random draws from its ranges, and the tree-structured
//! Parzen estimator (TPE; Bergstra et al., NeurIPS 2011) as Optuna's default sampler
//! runs it.
//!
//! TPE splits the finished trials into the best γ(n) = min(⌈n/10⌉, 25) and the rest,
//! fits a density to each parameter's values in either group (a Gaussian at every
//! observation, widths from the distance to its neighbours, clipped, plus a wide prior
//! component), draws candidates from the good density `l` and keeps the one with the
//! highest `l(x) / g(x)`. Like Optuna's default (`multivariate=False`), each parameter
//! is chosen on its own. Everything is seeded: the same history and seed give the same
//! proposal on every machine, which is what lets a redelivered round job propose again
//! without changing its trials.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Range, TpeSettings};
use crate::rng::SplitMix64;

/// A finished trial: its parameters and its metric, lower being better (a maximised
/// metric is negated before it gets here).
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The trial's parameters.
    pub params: BTreeMap<String, Value>,
    /// Its metric; lower is better.
    pub value: f64,
}

/// `count` points drawn independently from `ranges` with `seed`.
pub fn random_points(
    ranges: &BTreeMap<String, Range>,
    seed: u64,
    count: usize,
) -> Vec<BTreeMap<String, Value>> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            ranges
                .iter()
                .map(|(name, range)| (name.clone(), draw(&mut rng, range)))
                .collect()
        })
        .collect()
}

/// A value drawn uniformly from a range.
fn draw(rng: &mut SplitMix64, range: &Range) -> Value {
    match range {
        Range::Uniform([a, b]) => Value::from(a + (b - a) * rng.unit()),
        Range::LogUniform([a, b]) => Value::from((a.ln() + (b.ln() - a.ln()) * rng.unit()).exp()),
        Range::IntUniform([a, b]) => {
            let span = (b - a) as u64 + 1;
            Value::from(a + (rng.next_u64() % span) as i64)
        }
        Range::Choice(values) => values[(rng.next_u64() % values.len() as u64) as usize].clone(),
    }
}

/// The seed of proposal `index` of model-based round `round` of a sweep seeded `seed`.
pub fn proposal_seed(seed: u64, round: usize, index: usize) -> u64 {
    let mut rng = SplitMix64::new(seed ^ 0x7470_6500_0000_0000);
    let a = rng.next_u64();
    SplitMix64::new(a ^ ((round as u64) << 32) ^ index as u64).next_u64()
}

/// Proposes one point from the finished trials in `history` (in the order they were
/// planned). With fewer than two usable observations it draws at random.
pub fn propose(
    ranges: &BTreeMap<String, Range>,
    history: &[Observation],
    settings: &TpeSettings,
    seed: u64,
) -> BTreeMap<String, Value> {
    let mut rng = SplitMix64::new(seed);
    let usable: Vec<&Observation> = history.iter().filter(|o| o.value.is_finite()).collect();
    let mut point = BTreeMap::new();
    for (name, range) in ranges {
        let space = Space::of(range);
        // This parameter's observed values (in the model's space) with their metrics.
        let seen: Vec<(f64, f64)> = usable
            .iter()
            .filter_map(|o| Some((space.encode(o.params.get(name)?)?, o.value)))
            .collect();
        let value = if seen.len() < 2 {
            draw(&mut rng, range)
        } else {
            let (below, above) = split(&seen);
            let good = space.density(&below);
            let bad = space.density(&above);
            let best = (0..settings.candidates.max(1))
                .map(|_| good.sample(&mut rng))
                .map(|x| (good.log_pdf(x) - bad.log_pdf(x), x))
                .fold((f64::NEG_INFINITY, f64::NAN), |best, c| {
                    if c.0 > best.0 || best.1.is_nan() {
                        c
                    } else {
                        best
                    }
                })
                .1;
            space.decode(best)
        };
        point.insert(name.clone(), value);
    }
    point
}

/// Observed values in the model's space, each with a weight or a metric.
type Weighted = Vec<(f64, f64)>;

/// Splits observations into the best γ(n) = min(⌈n/10⌉, 25) and the rest, each with
/// Optuna's weights (older trials count less once there are more than 25), keeping
/// their order.
fn split(seen: &[(f64, f64)]) -> (Weighted, Weighted) {
    let n = seen.len();
    let n_below = n.div_ceil(10).clamp(1, 25);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| seen[a].1.total_cmp(&seen[b].1).then(a.cmp(&b)));
    let mut is_below = vec![false; n];
    for &i in &order[..n_below] {
        is_below[i] = true;
    }
    let pick = |want: bool| {
        let xs: Vec<f64> = (0..n)
            .filter(|&i| is_below[i] == want)
            .map(|i| seen[i].0)
            .collect();
        let weights = trial_weights(xs.len());
        xs.into_iter().zip(weights).collect::<Vec<_>>()
    };
    (pick(true), pick(false))
}

/// Optuna's `default_weights`: equal up to 25 trials, then a ramp from 1/n up to 1
/// for all but the latest 25.
fn trial_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .chain(std::iter::repeat_n(1.0, 25))
        .collect()
}

/// A parameter's space as the model sees it: numbers (log-scaled for log-uniform,
/// widened by half a step for integers) or the index of a choice.
enum Space<'a> {
    Numeric {
        low: f64,
        high: f64,
        log: bool,
        int: bool,
    },
    Choice(&'a [Value]),
}

impl<'a> Space<'a> {
    fn of(range: &'a Range) -> Space<'a> {
        match range {
            Range::Uniform([a, b]) => Space::Numeric {
                low: *a,
                high: *b,
                log: false,
                int: false,
            },
            Range::LogUniform([a, b]) => Space::Numeric {
                low: a.ln(),
                high: b.ln(),
                log: true,
                int: false,
            },
            Range::IntUniform([a, b]) => Space::Numeric {
                low: *a as f64 - 0.5,
                high: *b as f64 + 0.5,
                log: false,
                int: true,
            },
            Range::Choice(values) => Space::Choice(values),
        }
    }

    fn encode(&self, value: &Value) -> Option<f64> {
        match self {
            Space::Numeric { low, high, log, .. } => {
                let x = value.as_f64()?;
                let x = if *log {
                    x.max(f64::MIN_POSITIVE).ln()
                } else {
                    x
                };
                Some(x.clamp(*low, *high))
            }
            Space::Choice(values) => values.iter().position(|v| v == value).map(|i| i as f64),
        }
    }

    fn decode(&self, x: f64) -> Value {
        match self {
            Space::Numeric {
                low,
                high,
                log: true,
                ..
            } => Value::from(x.clamp(*low, *high).exp()),
            Space::Numeric {
                low,
                high,
                int: true,
                ..
            } => Value::from((x.round() as i64).clamp((low + 0.5) as i64, (high - 0.5) as i64)),
            Space::Numeric { low, high, .. } => Value::from(x.clamp(*low, *high)),
            Space::Choice(values) => values[(x as usize).min(values.len() - 1)].clone(),
        }
    }

    fn density(&self, observed: &[(f64, f64)]) -> Density {
        match self {
            Space::Numeric { low, high, .. } => Density::parzen(*low, *high, observed),
            Space::Choice(values) => Density::categorical(values.len(), observed),
        }
    }
}

/// A density over a parameter's space.
enum Density {
    /// A mixture of normals truncated to `[low, high]`: (weight, mean, width).
    Parzen {
        low: f64,
        high: f64,
        parts: Vec<(f64, f64, f64)>,
    },
    /// Probabilities of each choice.
    Categorical(Vec<f64>),
}

impl Density {
    /// Optuna's univariate Parzen estimator: a component at every observation and a
    /// prior at the middle as wide as the range; each observation's width is the
    /// larger distance to its neighbours, clipped to [range / min(100, 1 + n), range].
    fn parzen(low: f64, high: f64, observed: &[(f64, f64)]) -> Density {
        let span = high - low;
        if span <= 0.0 {
            return Density::Parzen {
                low,
                high,
                parts: vec![(1.0, low, 1.0)],
            };
        }
        let mut mus: Vec<f64> = observed.iter().map(|o| o.0).collect();
        let mut weights: Vec<f64> = observed.iter().map(|o| o.1).collect();
        mus.push((low + high) / 2.0);
        weights.push(1.0);
        let n = mus.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
        let mut with_ends = vec![low];
        with_ends.extend(order.iter().map(|&i| mus[i]));
        with_ends.push(high);
        let mut sigmas = vec![0.0; n];
        for (rank, &i) in order.iter().enumerate() {
            let left = with_ends[rank + 1] - with_ends[rank];
            let right = with_ends[rank + 2] - with_ends[rank + 1];
            sigmas[i] = left.max(right);
        }
        // Without endpoints: the outermost take their inner neighbour's distance.
        if n >= 2 {
            sigmas[order[0]] = with_ends[2] - with_ends[1];
            sigmas[order[n - 1]] = with_ends[n] - with_ends[n - 1];
        }
        sigmas[n - 1] = span;
        let min_sigma = span / (100f64).min(1.0 + n as f64);
        let total: f64 = weights.iter().sum();
        let parts = (0..n)
            .map(|i| (weights[i] / total, mus[i], sigmas[i].clamp(min_sigma, span)))
            .collect();
        Density::Parzen { low, high, parts }
    }

    /// Each choice's weight of observations plus an equal share of a prior of weight 1.
    fn categorical(choices: usize, observed: &[(f64, f64)]) -> Density {
        let mut p = vec![1.0 / choices as f64; choices];
        for &(x, w) in observed {
            p[x as usize] += w;
        }
        let total: f64 = p.iter().sum();
        Density::Categorical(p.into_iter().map(|v| v / total).collect())
    }

    fn sample(&self, rng: &mut SplitMix64) -> f64 {
        match self {
            Density::Parzen { low, high, parts } => {
                let (_, mu, sigma) = parts[pick(rng, parts.iter().map(|p| p.0))];
                for _ in 0..100 {
                    let x = mu + sigma * normal(rng);
                    if (*low..=*high).contains(&x) {
                        return x;
                    }
                }
                low + (high - low) * rng.unit()
            }
            Density::Categorical(p) => pick(rng, p.iter().copied()) as f64,
        }
    }

    fn log_pdf(&self, x: f64) -> f64 {
        match self {
            Density::Parzen { low, high, parts } => {
                let terms: Vec<f64> = parts
                    .iter()
                    .map(|&(w, mu, sigma)| {
                        let mass = (phi((high - mu) / sigma) - phi((low - mu) / sigma)).max(1e-12);
                        let z = (x - mu) / sigma;
                        w.ln()
                            - 0.5 * z * z
                            - sigma.ln()
                            - 0.5 * (2.0 * std::f64::consts::PI).ln()
                            - mass.ln()
                    })
                    .collect();
                let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln()
            }
            Density::Categorical(p) => p[x as usize].max(1e-300).ln(),
        }
    }
}

/// An index drawn with probability proportional to its weight.
fn pick(rng: &mut SplitMix64, weights: impl Iterator<Item = f64> + Clone) -> usize {
    let total: f64 = weights.clone().sum();
    let mut target = rng.unit() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if target < w {
            return i;
        }
        target -= w;
        last = i;
    }
    last
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SplitMix64) -> f64 {
    let u = 1.0 - rng.unit();
    let v = rng.unit();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// The standard normal distribution function.
fn phi(z: f64) -> f64 {
    0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
}

/// The error function (Abramowitz and Stegun 7.1.26; absolute error below 1.5e-7).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - t * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))))
            * (-x * x).exp();
    y.copysign(x)
}

/// A model-based sweep run in this process as the fleet runs it: `settings.startup_trials`
/// random points, then rounds of `parallel` proposals, each from every point evaluated
/// before its round, until `trials` points; `evaluate` gives a point's metric (lower is
/// better). The fleet's sweep with the same seed proposes the same points, so this
/// predicts it (and tests it).
pub fn run_in_rounds(
    ranges: &BTreeMap<String, Range>,
    settings: &TpeSettings,
    seed: u64,
    trials: usize,
    parallel: usize,
    evaluate: impl Fn(&BTreeMap<String, Value>) -> f64,
) -> Vec<Observation> {
    let startup = settings.startup_trials.clamp(1, trials.max(1));
    let mut history: Vec<Observation> = random_points(ranges, seed, startup)
        .into_iter()
        .map(|params| Observation {
            value: evaluate(&params),
            params,
        })
        .collect();
    let mut round = 1;
    while history.len() < trials {
        let proposals: Vec<_> = (0..parallel.max(1).min(trials - history.len()))
            .map(|i| propose(ranges, &history, settings, proposal_seed(seed, round, i)))
            .collect();
        history.extend(proposals.into_iter().map(|params| Observation {
            value: evaluate(&params),
            params,
        }));
        round += 1;
    }
    history
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Branin, shifted so that its minima (0.397887) sit away from the range's middle
    /// and grid: x in [-5, 10], y in [0, 15].
    pub(crate) fn shifted_branin(x: f64, y: f64) -> f64 {
        let (x, y) = (x - 1.3, y + 0.7);
        let pi = std::f64::consts::PI;
        let (b, c, t) = (5.1 / (4.0 * pi * pi), 5.0 / pi, 1.0 / (8.0 * pi));
        (y - b * x * x + c * x - 6.0).powi(2) + 10.0 * (1.0 - t) * x.cos() + 10.0
    }

    fn ranges() -> BTreeMap<String, Range> {
        [
            ("x".to_string(), Range::Uniform([-5.0, 10.0])),
            ("y".to_string(), Range::Uniform([0.0, 15.0])),
        ]
        .into()
    }

    fn evaluate(point: &BTreeMap<String, Value>) -> f64 {
        shifted_branin(point["x"].as_f64().unwrap(), point["y"].as_f64().unwrap())
    }

    /// The best value a sweep of `trials` finds, in rounds of `parallel` after 10
    /// random startup trials, as the fleet runs it.
    pub(crate) fn best_of_tpe(seed: u64, trials: usize, parallel: usize) -> f64 {
        let settings = TpeSettings::default();
        run_in_rounds(&ranges(), &settings, seed, trials, parallel, evaluate)
            .iter()
            .map(|o| o.value)
            .fold(f64::INFINITY, f64::min)
    }

    pub(crate) fn best_of_random(seed: u64, trials: usize) -> f64 {
        random_points(&ranges(), seed, trials)
            .iter()
            .map(evaluate)
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn shifted_branin_has_its_known_minimum() {
        let pi = std::f64::consts::PI;
        assert!((shifted_branin(pi + 1.3, 2.275 - 0.7) - 0.397_887).abs() < 1e-5);
    }

    #[test]
    fn tpe_beats_random_search_on_shifted_branin_over_seeds() {
        // 100 trials in rounds of 4 (after 10 random ones), over 20 seeds. Measured:
        // mean regret 0.34 against random search's 0.57; TPE better on 14 seeds of 20.
        // (At 40 trials the two are level: TPE needs its history.)
        let seeds = 0..20u64;
        let tpe: Vec<f64> = seeds.clone().map(|s| best_of_tpe(s, 100, 4)).collect();
        let random: Vec<f64> = seeds.map(|s| best_of_random(s, 100)).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let wins = tpe.iter().zip(&random).filter(|(t, r)| t < r).count();
        // Regret above the minimum, averaged over seeds.
        let (t, r) = (mean(&tpe) - 0.397_887, mean(&random) - 0.397_887);
        assert!(
            t < r * 0.8 && wins >= 12,
            "TPE regret {t:.3}, random {r:.3}, TPE won {wins}/20"
        );
    }

    #[test]
    fn proposals_are_seeded_and_stay_in_range() {
        let ranges: BTreeMap<String, Range> = [
            ("lr".to_string(), Range::LogUniform([1e-5, 1e-1])),
            ("rank".to_string(), Range::IntUniform([1, 64])),
            (
                "opt".to_string(),
                Range::Choice(vec![json!("adam"), json!("sgd")]),
            ),
        ]
        .into();
        let history: Vec<Observation> = random_points(&ranges, 3, 20)
            .into_iter()
            .map(|params| Observation {
                value: (params["lr"].as_f64().unwrap().ln() + 7.0).abs()
                    + if params["opt"] == json!("sgd") {
                        5.0
                    } else {
                        0.0
                    },
                params,
            })
            .collect();
        let settings = TpeSettings::default();
        for seed in 0..50 {
            let a = propose(&ranges, &history, &settings, seed);
            assert_eq!(a, propose(&ranges, &history, &settings, seed));
            assert!((1e-5..=1e-1).contains(&a["lr"].as_f64().unwrap()));
            assert!((1..=64).contains(&a["rank"].as_i64().unwrap()));
            assert!(a["opt"] == json!("adam") || a["opt"] == json!("sgd"));
        }
        // The model prefers the better choice and the better learning rates.
        let proposals: Vec<_> = (0..200)
            .map(|s| propose(&ranges, &history, &settings, s))
            .collect();
        let adam = proposals
            .iter()
            .filter(|p| p["opt"] == json!("adam"))
            .count();
        assert!(adam > 120, "adam proposed {adam}/200 times");
        let near = proposals
            .iter()
            .filter(|p| (p["lr"].as_f64().unwrap().ln() + 7.0).abs() < 2.0)
            .count();
        assert!(
            near > 100,
            "{near}/200 proposals near the best learning rate"
        );
    }

    #[test]
    fn weights_ramp_up_after_25_trials() {
        assert_eq!(trial_weights(3), vec![1.0; 3]);
        let w = trial_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12 && w[4] == 1.0 && w[29] == 1.0);
        assert!(w[1] > w[0]);
    }
}
