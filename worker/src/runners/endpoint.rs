//! A causal LM behind an OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, a
//! hosted API), through its completions API: the same prompt text, stop sequences,
//! token limit, temperature and seed a local model gets.
//!
//! A batch's prompts go out together, at most `max_concurrency` in flight. A request
//! that gets 429 or 5xx, times out or cannot connect is retried with exponential
//! backoff and jitter, waiting as long as a `Retry-After` header asks; one that keeps
//! failing fails the job with the endpoint's own message. Any other 4xx fails it for
//! good (retrying sends the same request). The API key, read from the variable the
//! job names, is sent as `Authorization: Bearer …` only, and scrubbed from every
//! message that could reach a log, an artifact or `status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use labelfleet_core::job::ModelRef;
use labelfleet_core::text::capped;
use labelfleet_models::{Completion, Confidence, Finish, GenerationParams};
use rand::Rng;
use serde_json::{Value, json};

use crate::runner::JobFailure;

/// Requests in flight when the job does not say.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Tries of one request before the job fails.
pub const ATTEMPTS: u32 = 6;
/// The first retry's pause; each later one doubles, up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const MAX_PAUSE: Duration = Duration::from_secs(20);
/// How long one completion may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A model served over HTTP.
pub struct EndpointModel {
    inner: Arc<Inner>,
    concurrency: usize,
    runtime: tokio::runtime::Handle,
}

struct Inner {
    /// `{endpoint}/completions`.
    url: String,
    name: String,
    key: Option<String>,
    client: reqwest::Client,
    /// Requests retried so far, each try after the first counted.
    retries: AtomicU64,
}

/// What one request's failure means.
enum Failure {
    /// Worth another try (429, 5xx, timeouts, connections): after this pause at least.
    Retry(String, Option<Duration>),
    /// Not worth another try: the request itself is wrong.
    Refused(String),
}

impl EndpointModel {
    /// The model `model` names (its `endpoint` set), its key read from the worker's
    /// environment. A key variable that is not set fails the job for good, naming the
    /// variable.
    pub fn new(
        model: &ModelRef,
        runtime: tokio::runtime::Handle,
    ) -> Result<EndpointModel, JobFailure> {
        let endpoint = model.endpoint.as_deref().expect("an endpoint model");
        let key = match &model.api_key_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|_| {
                JobFailure::permanent(format!(
                    "model.api_key_env: the worker's environment has no `{var}`; set it where \
                     the worker starts"
                ))
            })?),
        };
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| JobFailure::new(format!("creating an HTTP client: {e}")))?;
        Ok(EndpointModel {
            inner: Arc::new(Inner {
                url: format!("{}/completions", endpoint.trim_end_matches('/')),
                name: model.name.clone().unwrap_or_default(),
                key,
                client,
                retries: AtomicU64::new(0),
            }),
            concurrency: model.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            runtime,
        })
    }

    /// Requests in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Requests retried since the model was made (a job's `endpoint_retries`).
    pub fn retried(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// Completes every prompt, at most `concurrency` requests in flight; the
    /// completions come back in the prompts' order. Blocking: call it off the runtime.
    pub fn generate(
        &self,
        prompts: &[String],
        params: &GenerationParams,
    ) -> Result<Vec<Completion>, JobFailure> {
        let limit = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
        self.runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, prompt) in prompts.iter().enumerate() {
                let (inner, limit) = (self.inner.clone(), limit.clone());
                let (prompt, params) = (prompt.clone(), params.clone());
                tasks.spawn(async move {
                    let _permit = limit.acquire_owned().await.expect("never closed");
                    (i, inner.complete(&prompt, &params).await)
                });
            }
            let mut completions: Vec<Option<Completion>> = vec![None; prompts.len()];
            while let Some(done) = tasks.join_next().await {
                let (i, result) =
                    done.map_err(|e| JobFailure::new(format!("a request task failed: {e}")))?;
                completions[i] = Some(result?);
            }
            Ok(completions
                .into_iter()
                .map(|c| c.expect("every prompt answered"))
                .collect())
        })
    }
}

impl Inner {
    /// One prompt's completion, retried as the module docs say.
    async fn complete(
        &self,
        prompt: &str,
        params: &GenerationParams,
    ) -> Result<Completion, JobFailure> {
        let mut body = json!({
            "model": self.name,
            "prompt": prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "seed": params.seed,
        });
        if !params.stop.is_empty() {
            body["stop"] = json!(params.stop);
        }
        if let Some(top_p) = params.top_p {
            body["top_p"] = json!(top_p);
        }
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.request(&body, params).await {
                Ok(completion) => return Ok(completion),
                Err(Failure::Refused(message)) => {
                    return Err(JobFailure::permanent(self.scrub(&format!(
                        "the endpoint {} refused the request: {message}",
                        self.url
                    ))));
                }
                Err(Failure::Retry(message, asked)) => {
                    last = message;
                    if attempt == ATTEMPTS {
                        break;
                    }
                    let backoff = FIRST_PAUSE
                        .saturating_mul(1 << (attempt - 1))
                        .min(MAX_PAUSE)
                        .mul_f64(rand::rng().random_range(0.5..1.0));
                    let pause = asked.map_or(backoff, |a| a.max(backoff));
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(endpoint = %self.url, attempt, retry_in_ms = pause.as_millis() as u64, error = %self.scrub(&last), "endpoint request failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(JobFailure::new(self.scrub(&format!(
            "the endpoint {} failed {ATTEMPTS} times; the last: {last}",
            self.url
        ))))
    }

    async fn request(
        &self,
        body: &Value,
        params: &GenerationParams,
    ) -> Result<Completion, Failure> {
        let mut request = self.client.post(&self.url).json(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| {
            // reqwest's message names the URL, never the headers.
            Failure::Retry(format!("{}", e.without_url()), None)
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(300.0)));
        let text = response.text().await.map_err(|e| {
            Failure::Retry(format!("reading the response: {}", e.without_url()), None)
        })?;
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Failure::Retry(
                format!("HTTP {status}: {}", capped(text.trim())),
                retry_after,
            ));
        }
        if !status.is_success() {
            return Err(Failure::Refused(format!(
                "HTTP {status}: {}",
                capped(text.trim())
            )));
        }
        // A malformed answer may be a server's passing trouble: worth another try.
        parse_completion(&text, params).map_err(|m| Failure::Retry(m, None))
    }

    /// `message` with the key, should the server have echoed it, blanked out.
    fn scrub(&self, message: &str) -> String {
        match &self.key {
            Some(key) if !key.is_empty() => message.replace(key.as_str(), "[key]"),
            _ => message.to_string(),
        }
    }
}

/// A completions response as a [`Completion`], cut at the first stop sequence (as a
/// local model's is; servers that leave it in are handled the same).
fn parse_completion(text: &str, params: &GenerationParams) -> Result<Completion, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("the response is not JSON ({e}): {}", capped(text.trim())))?;
    let choice = value["choices"]
        .get(0)
        .ok_or_else(|| format!("the response has no choices: {}", capped(text.trim())))?;
    let mut completion = choice["text"].as_str().unwrap_or_default().to_string();
    let mut finish = match choice["finish_reason"].as_str() {
        Some("length") => Finish::Length,
        Some("stop") => Finish::Stop,
        _ => Finish::EndOfSequence,
    };
    if let Some(at) = params
        .stop
        .iter()
        .filter_map(|s| completion.find(s.as_str()))
        .min()
    {
        completion.truncate(at);
        finish = Finish::Stop;
    }
    let usage = &value["usage"];
    Ok(Completion {
        text: completion,
        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0) as usize,
        new_tokens: usage["completion_tokens"].as_u64().unwrap_or(0) as usize,
        finish,
        confidence: confidence_of(choice),
    })
}

/// The completion's [`Confidence`] where the server sent its tokens' log-probabilities
/// (`logprobs.token_logprobs`, which labelfleet does not ask for: llama.cpp's server,
/// for one, refuses the request unless started with `logits_all`).
fn confidence_of(choice: &Value) -> Option<Confidence> {
    let tokens = choice["logprobs"]["token_logprobs"].as_array()?;
    let mut confidence = Confidence::default();
    for logprob in tokens {
        confidence.add(logprob.as_f64().filter(|l| l.is_finite())?);
    }
    (!tokens.is_empty()).then_some(confidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> GenerationParams {
        GenerationParams {
            stop: vec!["\n".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_response_with_token_logprobs_carries_their_confidence() {
        let response = json!({
            "choices": [{
                "text": "hotel-area: north\nleft over",
                "finish_reason": "length",
                "logprobs": {"token_logprobs": [-0.25, -1.5, -0.25]}
            }],
            "usage": {"prompt_tokens": 40, "completion_tokens": 3}
        });
        let completion = parse_completion(&response.to_string(), &params()).unwrap();
        assert_eq!(completion.text, "hotel-area: north");
        assert_eq!(completion.finish, Finish::Stop);
        assert_eq!(
            completion.confidence,
            Some(Confidence {
                logprob: -2.0,
                min_logprob: -1.5
            })
        );
    }

    #[test]
    fn a_response_without_usable_logprobs_has_no_confidence() {
        for logprobs in [
            json!(null),
            json!({"token_logprobs": []}),
            json!({"token_logprobs": [-0.5, null]}),
        ] {
            let response = json!({
                "choices": [{"text": "x", "finish_reason": "stop", "logprobs": logprobs}],
            });
            let completion = parse_completion(&response.to_string(), &params()).unwrap();
            assert_eq!(completion.confidence, None, "{logprobs}");
        }
    }
}
