//! The fleet-wide AI rate limiter: requests-per-minute and tokens-per-minute
//! buckets per provider and model, kept in Redis and shared by every worker.
//!
//! One Lua script per operation, so reading and charging a bucket is one atomic
//! step (no check-now-charge-later overshoot), clocked by the Redis server's
//! `TIME` (no skew between pods). The arithmetic — virtual scheduling, FIFO,
//! debt, pauses — is specified and unit-tested in [`schedule`]; the scripts
//! implement it step for step.
//!
//! A caller's life: [`Limiter::acquire_with_policy`] books capacity for the
//! request (one round trip), sleeps until its own start (no polling, so no
//! stampede when capacity frees up) and returns a [`Permit`]. After the provider
//! call, [`Permit::reconcile`] charges the actual token usage (debt above the
//! reservation, a refund below it); if no call was made, [`Permit::release`]
//! gives the whole reservation back. A 429 calls [`Limiter::pause`]. For a
//! model without limits the booking only reads its pause: nothing to charge.
//!
//! Keys: one hash per model, `{ns}:rl:{provider:model}` — the hash tag keeps a
//! model's state in one Redis Cluster slot. It expires a minute after the last
//! moment it matters, so an idle model leaves nothing behind.
//!
//! What it does not do: decide what a job does when refused (the worker's
//! `classify`), or read the providers' rate-limit headers.

pub mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use hookfleet_common::redis::Pool;
use rand::Rng;
use tokio::time::Instant;

use hookfleet_common::config::FailMode;
use hookfleet_common::redis::chain::{Call, ChainScript, Step};

use crate::config::LimitsConfig;
use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::{RedisError, redis};
use hookfleet_common::topology::Topology;

pub use schedule::{Decision, Rates, State, TokenBucket};

/// Books one request (`limiter/reserve.lua`).
pub static RESERVE: Step = Step {
    name: "limiter.reserve",
    lua: concat!(
        "function(KEYS, ARGV)\n",
        include_str!("limiter/reserve.lua"),
        "\nend"
    ),
};
/// Charges debt or refunds (`limiter/adjust.lua`).
pub static ADJUST: Step = Step {
    name: "limiter.adjust",
    lua: concat!(
        "function(KEYS, ARGV)\n",
        include_str!("limiter/adjust.lua"),
        "\nend"
    ),
};
/// Pauses a model for the fleet (`limiter/pause.lua`).
pub static PAUSE: Step = Step {
    name: "limiter.pause",
    lua: concat!(
        "function(KEYS, ARGV)\n",
        include_str!("limiter/pause.lua"),
        "\nend"
    ),
};

/// How long a model's hash outlives the last moment it matters (ms).
const IDLE_EXPIRY_MS: u64 = 60_000;

/// Which clock a limiter operation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The Redis server's `TIME`: always, outside tests.
    Redis,
    /// This many µs since the epoch (tests of the arithmetic through Redis).
    At(u64),
}

impl Clock {
    fn arg(self) -> String {
        match self {
            Self::Redis => String::new(),
            Self::At(us) => us.to_string(),
        }
    }
}

/// The answer to one booking ([`Limiter::reserve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// Whether it was booked (and charged).
    pub granted: bool,
    /// From now until the start (granted) or until the start it would have had.
    pub wait: Duration,
    /// The start, µs on the Redis clock.
    pub start_us: u64,
    /// Now, µs on the Redis clock.
    pub now_us: u64,
    /// The model's pause shift when it was booked: if it has grown by the time
    /// the caller wakes up, a pause pushed its start back by the difference.
    pub shift_us: u64,
}

/// [`RESERVE`]'s reply: granted, wait, start, now, shift.
pub type ReserveReply = (i64, i64, u64, u64, u64);

impl From<ReserveReply> for Reservation {
    fn from((granted, wait, start_us, now_us, shift_us): ReserveReply) -> Self {
        Self {
            granted: granted == 1,
            wait: Duration::from_micros(u64::try_from(wait).unwrap_or(0)),
            start_us,
            now_us,
            shift_us,
        }
    }
}

/// Why no permit was given.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// No capacity within `max_wait`; nothing was charged. Retry after `wait`.
    #[error("no capacity for {model} within the limiter's max_wait (next in {wait:?})")]
    Saturated {
        /// `provider/model`.
        model: String,
        /// How long it would have waited.
        wait: Duration,
    },
    /// Redis could not be asked (after retrying for `max_wait`, in closed mode).
    #[error("rate limiter unavailable")]
    Unavailable(#[source] RedisError),
}

/// One model's configured rates and refund policy.
#[derive(Debug, Clone, Copy)]
struct ModelRates {
    rates: Rates,
    refund_unused: bool,
}

impl Default for ModelRates {
    fn default() -> Self {
        Self {
            rates: Rates::default(),
            refund_unused: true,
        }
    }
}

struct Inner {
    redis: SharedConnection,
    script: ChainScript,
    topology: Topology,
    timeout: Duration,
    max_wait: Duration,
    max_retry_after: Duration,
    fail_mode: FailMode,
    models: HashMap<(String, String), ModelRates>,
}

/// The limiter. Cheap to clone; every worker replica builds its own over its
/// own pool, and all of them share the state in Redis.
#[derive(Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("namespace", &self.inner.topology.namespace())
            .field("models", &self.inner.models.len())
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter with `config`'s limits; each Redis call gives up after
    /// `timeout` (`redis.timeout`). Does no I/O.
    pub fn new(pool: Pool, topology: Topology, config: &LimitsConfig, timeout: Duration) -> Self {
        let models = config
            .models
            .iter()
            .map(|m| {
                let rates = Rates {
                    requests: m
                        .rpm
                        .zip(m.request_burst())
                        .map(|(rpm, burst)| TokenBucket::per_minute(rpm, burst)),
                    tokens: m
                        .tpm
                        .zip(m.token_burst())
                        .map(|(tpm, burst)| TokenBucket::per_minute(tpm, burst)),
                };
                let limits = ModelRates {
                    rates,
                    refund_unused: m.refund_unused,
                };
                ((m.provider.clone(), m.model.clone()), limits)
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                redis: SharedConnection::new(pool),
                script: ChainScript::new(&super::STEPS),
                topology,
                timeout,
                max_wait: config.max_wait,
                max_retry_after: config.max_retry_after,
                fail_mode: config.redis_failure,
                models,
            }),
        }
    }

    /// `{ns}:rl:{provider:model}`. Braces in the names are replaced, as they
    /// would end the hash tag early.
    pub fn key(&self, provider: &str, model: &str) -> String {
        let tag = format!("{{{}:{}}}", unbrace(provider), unbrace(model));
        self.inner.topology.redis_key(&["rl", &tag])
    }

    /// The configured rates of a model (unlimited when not configured).
    pub fn rates(&self, provider: &str, model: &str) -> Rates {
        self.model(provider, model).rates
    }

    fn model(&self, provider: &str, model: &str) -> ModelRates {
        self.inner
            .models
            .get(&(provider.to_owned(), model.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// Books one request of `tokens` (prompt estimate + `max_tokens`) unless it
    /// would wait longer than `max_wait`: one script, one round trip. The
    /// building block of [`acquire`](Self::acquire); tests call it with
    /// [`Clock::At`].
    pub async fn reserve(
        &self,
        provider: &str,
        model: &str,
        tokens: u64,
        max_wait: Duration,
        clock: Clock,
    ) -> Result<Reservation, RedisError> {
        let call = self.reserve_call(provider, model, tokens, max_wait, clock);
        let reply: ReserveReply = self.run(call).await?;
        Ok(Reservation::from(reply))
    }

    /// The [`RESERVE`] call of [`reserve`](Self::reserve), for a job's own
    /// chain (`crate::limits`); read its reply with [`Reservation::from`].
    pub fn reserve_call(
        &self,
        provider: &str,
        model: &str,
        tokens: u64,
        max_wait: Duration,
        clock: Clock,
    ) -> Call {
        let [ri, rt, ti, tt] = self.rates(provider, model).script_args();
        Call::new(&RESERVE)
            .key(self.key(provider, model))
            .arg(clock.arg())
            .arg(ri.to_string())
            .arg(rt.to_string())
            .arg(ti.to_string())
            .arg(tt.to_string())
            .arg(tokens)
            .arg(micros(max_wait))
            .arg(IDLE_EXPIRY_MS)
    }

    async fn run<T: redis::FromRedisValue>(&self, call: Call) -> Result<T, RedisError> {
        self.inner
            .redis
            .run_call(self.inner.timeout, &self.inner.script, call)
            .await
    }

    /// Charges `requests` and `tokens` more (debt) or fewer (refund).
    pub async fn adjust(
        &self,
        provider: &str,
        model: &str,
        requests: i64,
        tokens: i64,
        clock: Clock,
    ) -> Result<(), RedisError> {
        let [ri, _, ti, _] = self.rates(provider, model).script_args();
        let call = Call::new(&ADJUST)
            .key(self.key(provider, model))
            .arg(clock.arg())
            .arg(ri.to_string())
            .arg(ti.to_string())
            .arg(requests)
            .arg(tokens)
            .arg(IDLE_EXPIRY_MS);
        self.run::<i64>(call).await.map(drop)
    }

    /// Pauses `provider`/`model` for the whole fleet for `retry_after` plus a
    /// little jitter (up to 10%, at most 1 s), counted on the Redis clock. Nothing
    /// booked for the model starts before the pause ends; everything booked moves
    /// back by the time added. A pause already in force for longer is kept.
    /// `retry_after` is first cut to `max_retry_after`, so a provider's daily
    /// quota never stops the fleet for hours. Returns how long the model is
    /// paused from now.
    pub async fn pause(
        &self,
        provider: &str,
        model: &str,
        retry_after: Duration,
    ) -> Result<Duration, RedisError> {
        let retry_after = retry_after.min(self.inner.max_retry_after);
        let cap = (retry_after / 10).min(Duration::from_secs(1));
        let jitter = rand::rng().random_range(0..=micros(cap));
        let total = retry_after + Duration::from_micros(jitter);
        self.pause_at(provider, model, total, Clock::Redis).await
    }

    /// [`pause`](Self::pause) for exactly `duration`, on `clock`.
    pub async fn pause_at(
        &self,
        provider: &str,
        model: &str,
        duration: Duration,
        clock: Clock,
    ) -> Result<Duration, RedisError> {
        let call = Call::new(&PAUSE)
            .key(self.key(provider, model))
            .arg(clock.arg())
            .arg(micros(duration).max(1))
            .arg(IDLE_EXPIRY_MS);
        let (_extended, remaining, _shift): (i64, i64, u64) = self.run(call).await?;
        Ok(Duration::from_micros(u64::try_from(remaining).unwrap_or(0)))
    }

    /// The model's state in Redis (all zero when idle).
    pub async fn state(&self, provider: &str, model: &str) -> Result<State, RedisError> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key(provider, model))
            .arg("rq")
            .arg("tk")
            .arg("last")
            .arg("pause")
            .arg("shift");
        let f: Vec<Option<u64>> = self.inner.redis.query(self.inner.timeout, &cmd).await?;
        let at = |i: usize| f.get(i).copied().flatten().unwrap_or(0);
        Ok(State {
            requests_tat: at(0),
            tokens_tat: at(1),
            last_start: at(2),
            paused_until: at(3),
            shift: at(4),
        })
    }

    /// The configured `max_wait` (`worker.limits.max_wait`).
    pub fn max_wait(&self) -> Duration {
        self.inner.max_wait
    }

    /// The configured `max_retry_after` (`worker.limits.max_retry_after`).
    pub fn max_retry_after(&self) -> Duration {
        self.inner.max_retry_after
    }

    /// Waits for capacity for one request of `tokens` (prompt estimate +
    /// `max_tokens`): books it, sleeps until its start, and follows any pause
    /// set meanwhile. Redis errors are returned as they are
    /// ([`acquire_with_policy`](Self::acquire_with_policy) applies the fail mode).
    ///
    /// Dropping the future while it waits gives the reservation back (in the
    /// background), so a cancelled job costs nothing.
    pub async fn acquire(
        &self,
        provider: &str,
        model: &str,
        tokens: u64,
    ) -> Result<Permit, AcquireError> {
        self.acquire_within(provider, model, tokens, self.inner.max_wait)
            .await
    }

    /// [`acquire`](Self::acquire), giving up after `max_wait` instead of the
    /// configured one: a pipeline with fallbacks asks its primary model with a
    /// short wait, so a paused or saturated model falls through quickly.
    pub async fn acquire_within(
        &self,
        provider: &str,
        model: &str,
        tokens: u64,
        max_wait: Duration,
    ) -> Result<Permit, AcquireError> {
        self.acquire_booked(provider, model, tokens, max_wait, None)
            .await
    }

    /// [`acquire_within`](Self::acquire_within) from a booking already made
    /// (`booked`: [`reserve_call`](Self::reserve_call) in a job's chain), or
    /// booking now when there is none.
    async fn acquire_booked(
        &self,
        provider: &str,
        model: &str,
        tokens: u64,
        max_wait: Duration,
        booked: Option<Reservation>,
    ) -> Result<Permit, AcquireError> {
        let began = Instant::now();
        let booked = match booked {
            Some(booked) => booked,
            None => self
                .reserve(provider, model, tokens, max_wait, Clock::Redis)
                .await
                .map_err(AcquireError::Unavailable)?,
        };
        if !booked.granted {
            return Err(AcquireError::Saturated {
                model: format!("{provider}/{model}"),
                wait: booked.wait,
            });
        }
        let mut pending = Pending {
            limiter: self.clone(),
            provider,
            model,
            tokens,
            armed: true,
        };
        if !booked.wait.is_zero() {
            tokio::time::sleep(booked.wait).await;
            let deadline = began
                .checked_add(max_wait)
                .unwrap_or_else(|| began + Duration::from_secs(86_400));
            if let Err(wait) = self
                .follow_pauses(provider, model, booked.shift_us, deadline)
                .await
            {
                // `pending` gives the reservation back as it drops.
                return Err(AcquireError::Saturated {
                    model: format!("{provider}/{model}"),
                    wait,
                });
            }
        }
        pending.armed = false;
        Ok(Permit {
            limiter: Some(self.clone()),
            provider: provider.to_owned(),
            model: model.to_owned(),
            tokens,
            waited: began.elapsed(),
        })
    }

    /// After sleeping until its start, a caller checks whether a pause pushed
    /// the schedule back meanwhile, and sleeps the difference — unless that
    /// would take it past `deadline` (its `max_wait`): then it gives up with
    /// the wait still ahead, as if it had been refused at booking. If Redis
    /// cannot say, it goes ahead: its booking was made before any pause it missed.
    async fn follow_pauses(
        &self,
        provider: &str,
        model: &str,
        mut shift: u64,
        deadline: Instant,
    ) -> Result<(), Duration> {
        let key = self.key(provider, model);
        loop {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(&key).arg("shift");
            let now = match self
                .inner
                .redis
                .query::<Option<u64>>(self.inner.timeout, &cmd)
                .await
            {
                Ok(now) => now.unwrap_or(0),
                Err(error) => {
                    tracing::warn!(%provider, %model, error = %error,
                        "Cannot check the fleet pause; proceeding on the booked start.");
                    return Ok(());
                }
            };
            if now <= shift {
                return Ok(());
            }
            let pushed = Duration::from_micros(now - shift);
            if Instant::now()
                .checked_add(pushed)
                .is_none_or(|resume| resume > deadline)
            {
                return Err(pushed);
            }
            tokio::time::sleep(pushed).await;
            shift = now;
        }
    }

    /// [`acquire`](Self::acquire) with the configured fail mode applied when
    /// Redis cannot be asked: `open` returns a [bypassed](Permit::is_bypassed) permit at once;
    /// `closed` retries with backoff until Redis answers or `max_wait` is spent,
    /// then returns [`AcquireError::Unavailable`].
    pub async fn acquire_with_policy(
        &self,
        provider: &str,
        model: &str,
        tokens: u64,
    ) -> Result<Permit, AcquireError> {
        self.acquire_with_policy_within(provider, model, tokens, self.inner.max_wait)
            .await
    }

    /// [`acquire_with_policy`](Self::acquire_with_policy) with its own
    /// `max_wait` (see [`acquire_within`](Self::acquire_within)).
    pub async fn acquire_with_policy_within(
        &self,
        provider: &str,
        model: &str,
        tokens: u64,
        max_wait: Duration,
    ) -> Result<Permit, AcquireError> {
        self.acquire_with_policy_booked(provider, model, tokens, max_wait, None)
            .await
    }

    /// [`acquire_with_policy_within`](Self::acquire_with_policy_within) whose
    /// first booking was already made (`booked`), when it was.
    pub async fn acquire_with_policy_booked(
        &self,
        provider: &str,
        model: &str,
        tokens: u64,
        max_wait: Duration,
        mut booked: Option<Reservation>,
    ) -> Result<Permit, AcquireError> {
        let began = Instant::now();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let first = booked.take();
            let error = match self
                .acquire_booked(provider, model, tokens, max_wait, first)
                .await
            {
                Err(AcquireError::Unavailable(error)) => error,
                other => return other,
            };
            if self.inner.fail_mode == FailMode::Open {
                tracing::warn!(%provider, %model, error = %error,
                    "Rate limiter unavailable; calling the provider without limiting.");
                return Ok(Permit::bypassed(provider, model, tokens, began.elapsed()));
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(5));
            if began.elapsed() + delay > max_wait {
                return Err(AcquireError::Unavailable(error));
            }
            tracing::warn!(%provider, %model, error = %error, retry_in = ?delay,
                "Rate limiter unavailable; waiting for Redis.");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Capacity booked for one provider call. Settle it once the call is over:
/// [`reconcile`](Self::reconcile) with the usage the provider reported, or
/// [`release`](Self::release) when no call was made (or the provider refused it
/// without counting it). Dropping it unsettled keeps the reservation charged,
/// which is right when it is unknown whether the call went out.
#[derive(Debug)]
#[must_use = "settle the permit with reconcile() or release()"]
pub struct Permit {
    /// `None` when granted without the limiter (fail-open).
    limiter: Option<Limiter>,
    provider: String,
    model: String,
    tokens: u64,
    waited: Duration,
}

impl Permit {
    fn bypassed(provider: &str, model: &str, tokens: u64, waited: Duration) -> Self {
        Self {
            limiter: None,
            provider: provider.to_owned(),
            model: model.to_owned(),
            tokens,
            waited,
        }
    }

    /// How long the acquisition took (`ratelimit_wait_seconds`).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Granted without the limiter, because Redis was down in fail-open mode.
    pub fn is_bypassed(&self) -> bool {
        self.limiter.is_none()
    }

    /// The tokens reserved.
    pub fn reserved_tokens(&self) -> u64 {
        self.tokens
    }

    /// Charges the difference between the tokens reserved and `used_tokens`
    /// (input + output as the provider reported them): debt when more, a refund
    /// when fewer (unless the model's `refund_unused` is off).
    pub async fn reconcile(self, used_tokens: u64) -> Result<(), RedisError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let model = limiter.model(&self.provider, &self.model);
        let mut delta = i64::try_from(used_tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.tokens).unwrap_or(i64::MAX));
        if delta < 0 && !model.refund_unused {
            delta = 0;
        }
        if delta == 0 || model.rates.tokens.is_none() {
            return Ok(());
        }
        limiter
            .adjust(&self.provider, &self.model, 0, delta, Clock::Redis)
            .await
    }

    /// Gives the whole reservation back: the call was never made, or the
    /// provider refused it without counting it.
    pub async fn release(self) -> Result<(), RedisError> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => {
                limiter
                    .release(&self.provider, &self.model, self.tokens)
                    .await
            }
        }
    }
}

impl Limiter {
    async fn release(&self, provider: &str, model: &str, tokens: u64) -> Result<(), RedisError> {
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        self.adjust(provider, model, -1, -tokens, Clock::Redis)
            .await
    }
}

/// A reservation whose start has not come yet: if the wait is abandoned (the
/// future dropped), it is given back in the background.
struct Pending<'a> {
    limiter: Limiter,
    provider: &'a str,
    model: &'a str,
    tokens: u64,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (limiter, tokens) = (self.limiter.clone(), self.tokens);
        let (provider, model) = (self.provider.to_owned(), self.model.to_owned());
        runtime.spawn(async move {
            if let Err(error) = limiter.release(&provider, &model, tokens).await {
                tracing::warn!(%provider, %model, error = %error,
                    "Cannot give back an abandoned reservation; it is paid off with time.");
            }
        });
    }
}

fn unbrace(name: &str) -> String {
    name.replace('{', "(").replace('}', ")")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
