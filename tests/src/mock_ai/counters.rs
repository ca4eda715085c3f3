//! What the mock has seen, for assertions: one `Counters` behind the server's
//! lock, read as a [`CountersSnapshot`] (directly or as `GET /counters` JSON).
//!
//! Every model-call answer is recorded in one place (`Counters::record`), so the
//! totals always agree with each other: `requests` equals the sum of `by_status`.
//! Requests that never reach a model-call route (`/healthz`, `/counters`) are not
//! counted.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::prompt::Prompt;

/// Distinct prompts whose text is kept for
/// [`MockAi::calls_for_prompt_containing`](super::MockAi::calls_for_prompt_containing);
/// later ones are still counted by hash. Bounds memory in long benchmarks.
pub const MAX_PROMPT_TEXTS: usize = 100_000;

/// How one model call was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200 with a completion, after admission by the rate window.
    Completed {
        /// Tokens counted against the window (prompt estimate + `max_tokens`).
        admitted_tokens: u32,
        /// Tokens of the completion.
        completion_tokens: u32,
    },
    /// 429 from the enforced rate window.
    WindowLimited,
    /// An injected failure, named as in [`CountersSnapshot::injected`].
    Injected(&'static str),
    /// 400/401: the request itself was wrong.
    Invalid,
}

/// The live counters, read through [`Counters::snapshot`]. Fields not documented
/// here mean what the same field of [`CountersSnapshot`] means.
#[derive(Debug)]
pub(crate) struct Counters {
    /// Start or last reset: the zero of `admitted_at_us`.
    epoch: Instant,
    requests: u64,
    by_status: BTreeMap<u16, u64>,
    by_model: BTreeMap<String, u64>,
    by_provider: BTreeMap<String, u64>,
    rate_limited: u64,
    injected: BTreeMap<String, u64>,
    tokens_admitted: u64,
    completion_tokens: u64,
    prompt_calls: HashMap<String, u64>,
    /// Hash → prompt text, for the first [`MAX_PROMPT_TEXTS`] distinct prompts.
    prompt_texts: HashMap<String, String>,
    admitted_at_us: Vec<u64>,
    throttled_at_us: Vec<u64>,
}

impl Counters {
    /// Zeroed counters whose clock starts at `epoch`.
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            requests: 0,
            by_status: BTreeMap::new(),
            by_model: BTreeMap::new(),
            by_provider: BTreeMap::new(),
            rate_limited: 0,
            injected: BTreeMap::new(),
            tokens_admitted: 0,
            completion_tokens: 0,
            prompt_calls: HashMap::new(),
            prompt_texts: HashMap::new(),
            admitted_at_us: Vec::new(),
            throttled_at_us: Vec::new(),
        }
    }

    /// Counts one request carrying `prompt` and returns how many (this one
    /// included) have carried it since the last reset.
    pub(crate) fn note_prompt(&mut self, prompt: &Prompt) -> u64 {
        let hash = prompt.hash();
        if self.prompt_texts.len() < MAX_PROMPT_TEXTS && !self.prompt_texts.contains_key(&hash) {
            self.prompt_texts.insert(hash.clone(), prompt.text());
        }
        let calls = self.prompt_calls.entry(hash).or_insert(0);
        *calls += 1;
        *calls
    }

    /// Records the admission time of a request the window let through.
    pub(crate) fn note_admitted(&mut self, at: Instant) {
        self.admitted_at_us
            .push(micros(at.saturating_duration_since(self.epoch)));
    }

    /// Records one answer to a model call.
    pub(crate) fn record(
        &mut self,
        provider: &str,
        model: Option<&str>,
        status: u16,
        answer: Answer,
    ) {
        self.requests += 1;
        *self.by_status.entry(status).or_default() += 1;
        if status == 429 {
            self.throttled_at_us
                .push(micros(Instant::now().saturating_duration_since(self.epoch)));
        }
        *self.by_provider.entry(provider.to_owned()).or_default() += 1;
        if let Some(model) = model {
            *self.by_model.entry(model.to_owned()).or_default() += 1;
        }
        match answer {
            Answer::Completed {
                admitted_tokens,
                completion_tokens,
            } => {
                self.tokens_admitted += u64::from(admitted_tokens);
                self.completion_tokens += u64::from(completion_tokens);
            }
            Answer::WindowLimited => self.rate_limited += 1,
            Answer::Injected(kind) => *self.injected.entry(kind.to_owned()).or_default() += 1,
            Answer::Invalid => {}
        }
    }

    /// Calls whose prompt text contains `needle`, over the kept texts.
    pub(crate) fn calls_for_prompt_containing(&self, needle: &str) -> u64 {
        self.prompt_texts
            .iter()
            .filter(|(_, text)| text.contains(needle))
            .map(|(hash, _)| self.prompt_calls.get(hash).copied().unwrap_or(0))
            .sum()
    }

    /// Time since the epoch (start or last reset).
    pub(crate) fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    /// A copy for assertions.
    pub(crate) fn snapshot(&self, now: Instant) -> CountersSnapshot {
        CountersSnapshot {
            requests: self.requests,
            by_status: self.by_status.clone(),
            by_model: self.by_model.clone(),
            by_provider: self.by_provider.clone(),
            rate_limited: self.rate_limited,
            injected: self.injected.clone(),
            tokens_admitted: self.tokens_admitted,
            completion_tokens: self.completion_tokens,
            prompt_calls: self
                .prompt_calls
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            admitted_at_us: {
                // Concurrent admissions may be noted slightly out of order.
                let mut times = self.admitted_at_us.clone();
                times.sort_unstable();
                times
            },
            throttled_at_us: {
                let mut times = self.throttled_at_us.clone();
                times.sort_unstable();
                times
            },
            elapsed_us: micros(self.elapsed(now)),
        }
    }
}

/// The counters at one moment. Also the JSON of `GET /counters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountersSnapshot {
    /// Model calls answered (`/v1/chat/completions` and `/v1/messages`), whatever
    /// the answer.
    pub requests: u64,
    /// Answers by HTTP status (JSON keys are strings, `"200"`).
    pub by_status: BTreeMap<u16, u64>,
    /// Answers by request `model` (requests too malformed to name one are left out).
    pub by_model: BTreeMap<String, u64>,
    /// Answers by endpoint: `openai` or `anthropic`.
    pub by_provider: BTreeMap<String, u64>,
    /// 429s answered by the enforced rate window (injected 429s are in `injected`;
    /// all 429s are in `by_status[429]`).
    pub rate_limited: u64,
    /// Injected failures by kind: `server_error` (random 5xx), `rate_limit`,
    /// `insufficient_quota`, `overloaded`, `malformed`, `fail_marker`,
    /// `bad_request_marker`, `first_attempt`.
    pub injected: BTreeMap<String, u64>,
    /// Tokens admitted by the window (prompt estimate + `max_tokens` per 200).
    pub tokens_admitted: u64,
    /// Completion tokens returned in 200s.
    pub completion_tokens: u64,
    /// Requests per prompt hash ([`Prompt::hash`]), whatever the answer except
    /// the 400/401s of requests too malformed to have a prompt: a retry of the
    /// same prompt counts again.
    pub prompt_calls: BTreeMap<String, u64>,
    /// Admission times of the requests the window let through (every 200 except
    /// `malformed`), in µs since the start or last reset, ascending.
    pub admitted_at_us: Vec<u64>,
    /// When each 429 (window or injected) was answered, in µs since the start or
    /// last reset, ascending: with `admitted_at_us`, what reached the provider
    /// after it said "slow down".
    #[serde(default)]
    pub throttled_at_us: Vec<u64>,
    /// µs from the start or last reset to this snapshot.
    pub elapsed_us: u64,
}

impl CountersSnapshot {
    /// Answers with HTTP status `code`.
    pub fn status(&self, code: u16) -> u64 {
        self.by_status.get(&code).copied().unwrap_or(0)
    }

    /// Requests carrying the prompt with this hash.
    pub fn calls_for_prompt(&self, hash: &str) -> u64 {
        self.prompt_calls.get(hash).copied().unwrap_or(0)
    }

    /// Injected failures of `kind` (see [`injected`](Self::injected)).
    pub fn injected(&self, kind: &str) -> u64 {
        self.injected.get(kind).copied().unwrap_or(0)
    }

    /// Admissions in `[from, to)`, offsets since the start or last reset.
    pub fn admitted_between(&self, from: Duration, to: Duration) -> usize {
        let (from, to) = (micros(from), micros(to));
        self.admitted_at_us
            .iter()
            .filter(|&&t| from <= t && t < to)
            .count()
    }

    /// Achieved throughput in `[from, to)`: admissions per second.
    pub fn admitted_per_second(&self, from: Duration, to: Duration) -> f64 {
        let span = to.saturating_sub(from).as_secs_f64();
        if span == 0.0 {
            return 0.0;
        }
        self.admitted_between(from, to) as f64 / span
    }

    /// The most admissions within any span of length `window`: at most the RPM
    /// limit when the window is the limit's window.
    pub fn max_admitted_in_any(&self, window: Duration) -> usize {
        let window = micros(window);
        let times = &self.admitted_at_us;
        let mut start = 0;
        let mut best = 0;
        for (end, &t) in times.iter().enumerate() {
            while t.saturating_sub(times[start]) >= window {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
