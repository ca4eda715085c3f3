//! Who did what from the console, and the form nonces that make every action
//! happen at most once.
//!
//! Each action (replay, dry run, purge) is one [`ConsoleAction`] whose `emit`
//! writes the audit log line and bumps `hookfleet_console_actions_total`
//! together, so the two never disagree. A form carries a fresh nonce; the
//! action claims it in Redis (`SET NX`, 24 h) before doing anything, so a
//! double submit — a double click, a browser resending the POST, a second
//! replica behind a load balancer — finds it claimed and changes nothing. A
//! claim whose action failed before touching the queue is released, so the
//! operator can try again with the same form.

use std::time::Duration;

use hookfleet_common::redis::RedisError;
use hookfleet_common::redis::redis;
use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::topology::Topology;
use prometheus::{IntCounterVec, Registry};

use crate::dlq::Summary;

/// How long a used nonce is remembered.
const NONCE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The console's counters, in the worker's registry.
#[derive(Clone)]
pub struct ConsoleMetrics {
    /// `hookfleet_console_actions_total{action, outcome}`.
    actions: IntCounterVec,
    /// `hookfleet_console_logins_total{outcome}`.
    logins: IntCounterVec,
}

impl ConsoleMetrics {
    /// Registers the console's counters in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let actions = hookfleet_common::metrics::counter(
            registry,
            "console_actions_total",
            "Console actions on the DLQ by action (replay, dry_run, purge) and outcome (done, duplicate, failed).",
            &["action", "outcome"],
        )?;
        let logins = hookfleet_common::metrics::counter(
            registry,
            "console_logins_total",
            "Console logins by outcome (ok, failed).",
            &["outcome"],
        )?;
        Ok(Self { actions, logins })
    }

    /// Counts one login attempt.
    pub fn login(&self, outcome: &str) {
        self.logins.with_label_values(&[outcome]).inc();
    }
}

/// One action taken from the console.
pub struct ConsoleAction<'a> {
    /// The credential's name.
    pub operator: &'a str,
    /// `replay`, `dry_run` or `purge`.
    pub action: &'static str,
    /// The selection, as filters (`source=stripe class=exhausted`).
    pub selection: &'a str,
    /// `done`, `duplicate` or `failed`.
    pub outcome: &'static str,
    /// What the engine did, when it ran.
    pub summary: Option<&'a Summary>,
}

impl ConsoleAction<'_> {
    /// Writes the audit line and counts the action.
    pub fn emit(&self, metrics: &ConsoleMetrics) {
        let s = self.summary.cloned().unwrap_or_default();
        tracing::info!(
            audit = true,
            operator = %self.operator,
            action = self.action,
            selection = %self.selection,
            outcome = self.outcome,
            matched = s.matched,
            replayed = s.replayed,
            purged = s.purged,
            skipped = s.skipped,
            failed = s.failed,
            "Console action."
        );
        metrics
            .actions
            .with_label_values(&[self.action, self.outcome])
            .inc();
    }
}

/// The one-use form nonces.
#[derive(Clone)]
pub struct Nonces {
    redis: SharedConnection,
    topology: Topology,
    timeout: Duration,
}

impl Nonces {
    /// Nonces under `{ns}:console:nonce:*`.
    pub fn new(redis: SharedConnection, topology: Topology, timeout: Duration) -> Self {
        Self {
            redis,
            topology,
            timeout,
        }
    }

    /// A fresh nonce for a form.
    pub fn fresh() -> String {
        ulid::Ulid::new().to_string()
    }

    /// Whether `nonce` has the shape [`Nonces::fresh`] gives (hostile input
    /// never reaches a Redis key otherwise).
    pub fn well_formed(nonce: &str) -> bool {
        nonce.len() == 26 && nonce.chars().all(|c| c.is_ascii_alphanumeric())
    }

    /// Claims `nonce`: `true` the first time, `false` ever after.
    pub async fn claim(&self, nonce: &str) -> Result<bool, RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(nonce))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(NONCE_TTL.as_millis()).unwrap_or(u64::MAX));
        let set: Option<String> = self.redis.query(self.timeout, &cmd).await?;
        Ok(set.is_some())
    }

    /// Releases a claim whose action changed nothing, so the form can be sent again.
    pub async fn release(&self, nonce: &str) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(nonce));
        if let Err(e) = self.redis.query::<i64>(self.timeout, &cmd).await {
            tracing::warn!(error = %hookfleet_common::telemetry::error_chain(&e), "Cannot release a console form nonce; that form cannot be sent again.");
        }
    }

    fn key(&self, nonce: &str) -> String {
        self.topology.redis_key(&["console", "nonce", nonce])
    }
}
