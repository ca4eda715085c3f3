//! The enforced rate limit: a sliding window per model, counting requests and
//! tokens admitted in the last `window` (60 s in production use).
//!
//! Why a sliding log rather than OpenAI's per-second refill: the mock must make
//! "no more than N in any window" exactly true and its `retry-after` exactly
//! right, so tests can assert both; a log of admissions gives both with simple
//! arithmetic. A request admitted at `t` stops counting at `t + window`.
//!
//! Time is an input (`now`), so the arithmetic is tested without sleeping. The
//! caller holds the lock around [`RateWindow::try_admit`]; the window itself does
//! no locking.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::ModelLimits;

/// Admissions of one model within the current window.
#[derive(Debug, Default)]
pub struct RateWindow {
    /// (admitted at, tokens) oldest first.
    entries: VecDeque<(Instant, u32)>,
    /// Sum of the tokens in `entries`.
    tokens: u64,
}

/// The answer of [`RateWindow::try_admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted and counted; the usage includes this request.
    Admitted(WindowUsage),
    /// Over a limit; nothing was counted.
    Limited(Limited),
}

/// Usage of the window at a point in time, for the rate-limit headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowUsage {
    /// The limits in force.
    pub limits: ModelLimits,
    /// Requests counted in the window.
    pub requests: u32,
    /// Tokens counted in the window.
    pub tokens: u64,
    /// Time until the window is empty again (OpenAI's "reset": time to a full
    /// refill). Zero when it is empty.
    pub full_reset: Duration,
}

impl WindowUsage {
    /// Requests still admissible now; `None` when unlimited.
    pub fn remaining_requests(&self) -> Option<u32> {
        self.limits.rpm.map(|l| l.saturating_sub(self.requests))
    }

    /// Tokens still admissible now; `None` when unlimited.
    pub fn remaining_tokens(&self) -> Option<u64> {
        self.limits
            .tpm
            .map(|l| u64::from(l).saturating_sub(self.tokens))
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per window.
    Requests,
    /// Tokens per window.
    Tokens,
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The limit that refused (requests when both did).
    pub kind: LimitKind,
    /// Time until enough admissions leave the window for this request to fit
    /// under every limit. `None` when it can never fit (more tokens than the
    /// whole limit, or a limit of 0): waiting does not help.
    pub retry_after: Option<Duration>,
    /// What this request asked for in the refusing dimension (1 or its tokens).
    pub requested: u64,
    /// Usage of the window now.
    pub usage: WindowUsage,
}

impl RateWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits a request of `tokens` at `now` if it fits under `limits` for the
    /// window `window`, and counts it; otherwise says when it would fit.
    /// `now` must not go backwards between calls.
    pub fn try_admit(
        &mut self,
        now: Instant,
        window: Duration,
        limits: ModelLimits,
        tokens: u32,
    ) -> Admission {
        self.expire(now, window);
        let fits = |requests: usize, used: u64| {
            limits.rpm.is_none_or(|l| requests < l as usize)
                && limits
                    .tpm
                    .is_none_or(|l| used + u64::from(tokens) <= u64::from(l))
        };
        if fits(self.entries.len(), self.tokens) {
            self.entries.push_back((now, tokens));
            self.tokens += u64::from(tokens);
            return Admission::Admitted(self.usage(now, window, limits));
        }

        let requests_refuse = limits.rpm.is_some_and(|l| self.entries.len() >= l as usize);
        let (kind, requested) = if requests_refuse {
            (LimitKind::Requests, 1)
        } else {
            (LimitKind::Tokens, u64::from(tokens))
        };
        let never_fits = limits.rpm == Some(0) || limits.tpm.is_some_and(|l| tokens > l);
        let retry_after = if never_fits {
            None
        } else {
            // Admissions leave oldest first; the first departure after which the
            // request fits is when it may come back. The loop always finds one:
            // with the window empty, it fits (not `never_fits`).
            let mut requests = self.entries.len();
            let mut used = self.tokens;
            self.entries.iter().find_map(|&(at, t)| {
                requests -= 1;
                used -= u64::from(t);
                fits(requests, used).then(|| (at + window).saturating_duration_since(now))
            })
        };
        Admission::Limited(Limited {
            kind,
            retry_after,
            requested,
            usage: self.usage(now, window, limits),
        })
    }

    /// Usage at `now`, without admitting anything.
    pub fn usage(&mut self, now: Instant, window: Duration, limits: ModelLimits) -> WindowUsage {
        self.expire(now, window);
        WindowUsage {
            limits,
            requests: u32::try_from(self.entries.len()).unwrap_or(u32::MAX),
            tokens: self.tokens,
            full_reset: self.entries.back().map_or(Duration::ZERO, |&(at, _)| {
                (at + window).saturating_duration_since(now)
            }),
        }
    }

    /// Drops admissions made `window` or longer before `now`.
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, tokens)) = self.entries.front() {
            if now.saturating_duration_since(at) < window {
                break;
            }
            self.entries.pop_front();
            self.tokens -= u64::from(tokens);
        }
    }
}
