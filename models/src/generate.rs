//! Batched text generation: many prompts decoded together, each stopping on its own.

use std::time::Instant;

use candle_core::{D, DType, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::ModelError;
use crate::llama::{Llama, argmax_rows};
use crate::tokenizer::TextTokenizer;

/// How to pick tokens and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// Most tokens to generate per prompt.
    pub max_new_tokens: usize,
    /// 0 for greedy decoding; otherwise the softmax temperature for sampling.
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    pub top_p: Option<f64>,
    /// Seed for sampling; each prompt's generator is seeded from it and the prompt, so
    /// a prompt samples the same text whatever batch it runs in.
    pub seed: u64,
    /// Generation stops when the text contains one of these (it is cut before it).
    pub stop: Vec<String>,
}

impl Default for GenerationParams {
    /// Greedy, 64 new tokens, no stop sequence.
    fn default() -> Self {
        GenerationParams {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: None,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// Why generation of a prompt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop sequence appeared.
    Stop,
    /// The model emitted its end-of-sequence token.
    EndOfSequence,
    /// `max_new_tokens` ran out.
    Length,
}

/// One prompt's completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated text, cut before any stop sequence.
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub new_tokens: usize,
    /// Why it ended.
    pub finish: Finish,
    /// How sure the model was of what it wrote, where it is known (a local model
    /// always; an endpoint when its response carries log-probabilities).
    pub confidence: Option<Confidence>,
}

/// The log-probabilities of a completion's tokens under the model's own distribution
/// (before any temperature), the token that ended it included: what a labelling job
/// keeps to tell its likely labels from its guesses (in its running log, as this).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Confidence {
    /// Sum over the tokens: the log-probability of the whole completion.
    pub logprob: f64,
    /// The least likely token's log-probability: one doubtful value in an otherwise
    /// sure completion shows here and is averaged away in `logprob`.
    pub min_logprob: f64,
}

impl Confidence {
    /// Adds one token's log-probability (never above 0, so the default, 0 and 0, is
    /// a completion of no tokens).
    pub fn add(&mut self, token_logprob: f64) {
        self.logprob += token_logprob;
        self.min_logprob = self.min_logprob.min(token_logprob);
    }
}

/// Time spent on a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BatchTiming {
    /// Seconds spent reading the prompts.
    pub prefill_seconds: f64,
    /// Seconds spent generating.
    pub decode_seconds: f64,
    /// Tokens generated, all prompts together.
    pub new_tokens: usize,
}

/// A causal LM with its tokenizer.
pub struct CausalLm {
    /// The network.
    pub model: Llama,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
}

struct Row {
    index: usize,
    generated: Vec<u32>,
    rng: StdRng,
    prompt_tokens: usize,
    confidence: Confidence,
}

fn prompt_seed(seed: u64, prompt: &[u8]) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike std's hasher.
    prompt.iter().fold(seed ^ 0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

impl CausalLm {
    /// Completes every prompt; prompts are independent, and the batch shrinks as
    /// prompts finish.
    pub fn generate(
        &self,
        prompts: &[String],
        params: &GenerationParams,
    ) -> Result<(Vec<Completion>, BatchTiming), ModelError> {
        let encoded: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| self.tokenizer.encode(p))
            .collect::<Result<_, _>>()?;
        let seeds: Vec<u64> = prompts
            .iter()
            .map(|p| prompt_seed(params.seed, p.as_bytes()))
            .collect();
        self.complete(&encoded, &seeds, params)
    }

    /// [`CausalLm::generate`] for prompts already tokenized, such as a benchmark's,
    /// which must feed two engines the same ids. Each row samples from its own seed,
    /// drawn from `params.seed` and its ids.
    pub fn generate_tokens(
        &self,
        prompts: &[Vec<u32>],
        params: &GenerationParams,
    ) -> Result<(Vec<Completion>, BatchTiming), ModelError> {
        let seeds: Vec<u64> = prompts
            .iter()
            .map(|ids| {
                let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
                prompt_seed(params.seed, &bytes)
            })
            .collect();
        self.complete(prompts, &seeds, params)
    }

    fn complete(
        &self,
        encoded: &[Vec<u32>],
        seeds: &[u64],
        params: &GenerationParams,
    ) -> Result<(Vec<Completion>, BatchTiming), ModelError> {
        let mut timing = BatchTiming::default();
        if encoded.is_empty() {
            return Ok((Vec::new(), timing));
        }
        let longest = encoded.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return Err(ModelError::Invalid(
                "an empty prompt cannot be completed".into(),
            ));
        }
        let padding: Vec<usize> = encoded.iter().map(|e| longest - e.len()).collect();
        let pad_token = self.tokenizer.eos.unwrap_or(0);
        let tokens: Vec<Vec<u32>> = encoded
            .iter()
            .zip(&padding)
            .map(|(e, &pad)| {
                std::iter::repeat_n(pad_token, pad)
                    .chain(e.iter().copied())
                    .collect()
            })
            .collect();
        let mut rows: Vec<Row> = seeds
            .iter()
            .zip(encoded)
            .enumerate()
            .map(|(index, (&seed, e))| Row {
                index,
                generated: Vec::new(),
                rng: StdRng::seed_from_u64(seed),
                prompt_tokens: e.len(),
                confidence: Confidence::default(),
            })
            .collect();
        let mut done: Vec<Option<Completion>> = vec![None; encoded.len()];
        let mut cache = self.model.new_cache(encoded.len());
        let started = Instant::now();
        let mut logits = self.model.forward(&tokens, &padding, &mut cache)?;
        timing.prefill_seconds = started.elapsed().as_secs_f64();
        let decoding = Instant::now();
        loop {
            let next = self.pick(&logits, &mut rows, params)?;
            let token_logprobs = chosen_logprobs(&logits, &next)?;
            let mut keep = Vec::with_capacity(rows.len());
            for (i, (row, token)) in rows.iter_mut().zip(&next).enumerate() {
                row.confidence.add(token_logprobs[i]);
                let finish = if Some(*token) == self.tokenizer.eos {
                    Some(Finish::EndOfSequence)
                } else {
                    row.generated.push(*token);
                    timing.new_tokens += 1;
                    None
                };
                // Decoding the text each step costs as much as a small model's step
                // on a GPU: only stop strings need it.
                let mut text = if params.stop.is_empty() {
                    None
                } else {
                    Some(self.tokenizer.decode(&row.generated)?)
                };
                let stop_at = text.as_deref().and_then(|text| {
                    params
                        .stop
                        .iter()
                        .filter_map(|s| text.find(s.as_str()))
                        .min()
                });
                let finish = finish
                    .or(stop_at.map(|_| Finish::Stop))
                    .or((row.generated.len() >= params.max_new_tokens).then_some(Finish::Length));
                match finish {
                    Some(finish) => {
                        let mut text = match text.take() {
                            Some(text) => text,
                            None => self.tokenizer.decode(&row.generated)?,
                        };
                        if let Some(at) = stop_at {
                            text.truncate(at);
                        }
                        done[row.index] = Some(Completion {
                            text,
                            prompt_tokens: row.prompt_tokens,
                            new_tokens: row.generated.len(),
                            finish,
                            confidence: Some(row.confidence),
                        });
                    }
                    None => keep.push(i),
                }
            }
            if keep.is_empty() {
                break;
            }
            let last: Vec<Vec<u32>> = keep.iter().map(|&i| vec![next[i]]).collect();
            cache.retain(&keep)?;
            rows = std::mem::take(&mut rows)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| keep.contains(i))
                .map(|(_, row)| row)
                .collect();
            let no_padding = vec![0; keep.len()];
            logits = self.model.forward(&last, &no_padding, &mut cache)?;
        }
        timing.decode_seconds = decoding.elapsed().as_secs_f64();
        let completions = done
            .into_iter()
            .map(|c| c.expect("every row finishes"))
            .collect();
        Ok((completions, timing))
    }

    fn pick(
        &self,
        logits: &Tensor,
        rows: &mut [Row],
        params: &GenerationParams,
    ) -> Result<Vec<u32>, ModelError> {
        if params.temperature <= 0.0 {
            return argmax_rows(logits);
        }
        let probs = candle_nn::ops::softmax_last_dim(
            &(logits.to_dtype(DType::F32)? / params.temperature)?,
        )?;
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        Ok(rows
            .iter_mut()
            .zip(probs)
            .map(|(row, p)| sample(&p, params.top_p, &mut row.rng))
            .collect())
    }
}

/// Each row's log-probability of the token picked for it, under the unscaled logits.
/// On the logits' device: only one number a row comes back.
fn chosen_logprobs(logits: &Tensor, picked: &[u32]) -> Result<Vec<f64>, ModelError> {
    let log_probs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let index = Tensor::new(picked, logits.device())?.unsqueeze(1)?;
    let chosen = log_probs.gather(&index, 1)?.squeeze(1)?.to_vec1::<f32>()?;
    Ok(chosen.into_iter().map(f64::from).collect())
}

fn sample(probs: &[f32], top_p: Option<f64>, rng: &mut StdRng) -> u32 {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    let mut mass = 1.0f64;
    if let Some(top_p) = top_p.filter(|p| *p < 1.0) {
        order.sort_unstable_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut kept = 0.0f64;
        let mut cut = order.len();
        for (n, &i) in order.iter().enumerate() {
            kept += probs[i] as f64;
            if kept >= top_p {
                cut = n + 1;
                break;
            }
        }
        order.truncate(cut);
        mass = kept.min(1.0);
    }
    let mut target = rng.random::<f64>() * mass;
    for &i in &order {
        target -= probs[i] as f64;
        if target <= 0.0 {
            return i as u32;
        }
    }
    *order.last().expect("a vocabulary is never empty") as u32
}
