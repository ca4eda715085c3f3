//! Single flight across the fleet: of N identical concurrent requests, on any
//! number of workers, one calls the provider and the others wait for its answer.
//!
//! One script per lookup, atomic over the value and its lock (one hash tag, one
//! Cluster slot): the value if stored; otherwise the lock `SET NX PX lease` with
//! a random token, making the caller the *leader*; otherwise how long the lock
//! has left. Waiters repeat the same lookup with jittered, growing pauses
//! (10 ms → 250 ms), so when the leader stores the answer they find it, and when
//! the leader gives up or dies they take over: a failed leader deletes its lock
//! at once; a crashed one's lock expires after its lease. The leader renews its
//! lease while it works, so the lease bounds how long a crash holds others up,
//! not how long a call may take.
//!
//! Releasing and renewing compare the token first (Lua), so a leader whose lease
//! lapsed never deletes or extends its successor's lock.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::{Cache, CacheError, CacheKey, CacheOutcome, CachedCompletion, encode, millis};
use crate::config::CacheSettings;
use hookfleet_common::redis::chain::{Call, Step};

/// The value, or else the lock for `ARGV[1]`, or else the lock's PTTL. Stops
/// the chain unless the caller became the leader: only a leader books the
/// limiter (the step after it in a job's chain).
pub static LOOKUP: Step = Step {
    name: "cache.lookup",
    lua: r"
function(KEYS, ARGV)
local value = redis.call('GET', KEYS[1])
if value then return {1, value, 0}, true end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, '', 0} end
return {3, '', redis.call('PTTL', KEYS[2])}, true
end
",
};

/// Stores the value, then drops the lock if it is still ours.
pub static FILL: Step = Step {
    name: "cache.fill",
    lua: r"
function(KEYS, ARGV)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
end
",
};

/// Extends the lock if it is still ours.
pub static RENEW: Step = Step {
    name: "cache.renew",
    lua: r"
function(KEYS, ARGV)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
end
",
};

/// Drops the lock if it is still ours.
pub static RELEASE: Step = Step {
    name: "cache.release",
    lua: r"
function(KEYS, ARGV)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
end
",
};

/// [`LOOKUP`]'s reply: 1 hit (with the value), 2 leader, 3 busy (with the PTTL).
pub type LookupReply = (i64, String, i64);

/// The answer to one lookup.
#[derive(Debug)]
pub enum Lookup {
    /// Stored already.
    Hit(CachedCompletion),
    /// Not stored, and nobody is computing it: the caller is now the leader
    /// and must [`fill`](FlightGuard::fill) or [`abandon`](FlightGuard::abandon).
    Leader(FlightGuard),
    /// Another caller is computing it; its lock lapses in at most this long.
    Busy(Duration),
}

/// Why [`Cache::get_or_compute`] returned no answer.
#[derive(Debug, thiserror::Error)]
pub enum FlightError<E> {
    /// The computation (limiter + provider call) failed: the job's own error.
    #[error("computing the answer failed")]
    Compute(#[source] E),
    /// The cache could not be used: call the provider without it.
    #[error(transparent)]
    Cache(CacheError),
}

/// The leader's claim on computing one answer. Settle it with
/// [`fill`](Self::fill) or [`abandon`](Self::abandon); dropping it unsettled
/// releases the claim in the background, so a waiter takes over at once.
#[derive(Debug)]
#[must_use = "fill() or abandon() the flight"]
pub struct FlightGuard {
    cache: Cache,
    key: CacheKey,
    token: String,
    lease: Duration,
    settled: bool,
}

impl Cache {
    /// Looks the answer up; if absent and unclaimed, claims its computation for
    /// `lease`. One round trip.
    pub async fn lookup(&self, key: &CacheKey, lease: Duration) -> Result<Lookup, CacheError> {
        // Twice at most: a second pass only follows an unreadable entry's removal.
        for _ in 0..2 {
            let (call, token) = self.lookup_call(key, lease);
            let reply: LookupReply = self
                .redis
                .run_call(self.timeout, &self.script, call)
                .await?;
            if let Some(lookup) = self.read_lookup(key, token, lease, reply).await? {
                return Ok(lookup);
            }
        }
        Ok(Lookup::Busy(Duration::ZERO))
    }

    /// The [`LOOKUP`] call of [`lookup`](Self::lookup) and the token it claims
    /// the flight with, for a job's own chain; read its reply with
    /// [`read_lookup`](Self::read_lookup).
    pub fn lookup_call(&self, key: &CacheKey, lease: Duration) -> (Call, String) {
        let token = ulid::Ulid::new().to_string();
        let call = Call::new(&LOOKUP)
            .key(self.value_key(key))
            .key(self.lock_key(key))
            .arg(&token)
            .arg(millis(lease));
        (call, token)
    }

    /// What a [`LOOKUP`] reply means; `None` when it found an entry that no
    /// longer decodes (now deleted): look again.
    pub async fn read_lookup(
        &self,
        key: &CacheKey,
        token: String,
        lease: Duration,
        (kind, raw, pttl): LookupReply,
    ) -> Result<Option<Lookup>, CacheError> {
        Ok(match kind {
            1 => self.decode(key, &raw).await?.map(Lookup::Hit),
            2 => Some(Lookup::Leader(FlightGuard {
                cache: self.clone(),
                key: key.clone(),
                token,
                lease,
                settled: false,
            })),
            _ => {
                // PTTL is -2 if the lock vanished since SET NX failed: look again soon.
                let left = u64::try_from(pttl).unwrap_or(0);
                Some(Lookup::Busy(Duration::from_millis(left)))
            }
        })
    }

    /// The answer for `key`: stored ([`CacheOutcome::Hit`]), computed by this
    /// caller with `compute` and stored for `settings.ttl`
    /// ([`CacheOutcome::Miss`]), or computed by another caller anywhere in the
    /// fleet while this one waited ([`CacheOutcome::Coalesced`]).
    ///
    /// `compute` runs at most once, and only while this caller holds the
    /// flight's lock (renewed every `lease / 3`). If it fails, the lock is
    /// released so a waiter takes over, and the error is returned as
    /// [`FlightError::Compute`]. Redis errors, and waiting longer than
    /// `settings.max_wait`, are [`FlightError::Cache`] — except once the answer
    /// is computed: failing to store it is logged, and the answer returned.
    pub async fn get_or_compute<F, Fut, E>(
        &self,
        key: &CacheKey,
        settings: &CacheSettings,
        compute: F,
    ) -> Result<(CachedCompletion, CacheOutcome), FlightError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedCompletion, E>>,
    {
        let computed = self
            .get_or_compute_from(None, key, settings, compute)
            .await?;
        if let Some(fill) = computed.fill {
            fill.store().await;
        }
        Ok((computed.value, computed.outcome))
    }

    /// [`get_or_compute`](Self::get_or_compute) starting from `first`, a
    /// lookup already made (in a job's chain), and leaving a computed answer
    /// to store ([`Computed::fill`]) with the job's other Redis work.
    pub async fn get_or_compute_from<F, Fut, E>(
        &self,
        mut first: Option<Lookup>,
        key: &CacheKey,
        settings: &CacheSettings,
        compute: F,
    ) -> Result<Computed, FlightError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedCompletion, E>>,
    {
        let began = Instant::now();
        let mut waited = false;
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(250))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let lookup = match first.take() {
                Some(lookup) => lookup,
                None => self
                    .lookup(key, settings.lease)
                    .await
                    .map_err(FlightError::Cache)?,
            };
            match lookup {
                Lookup::Hit(value) => {
                    let outcome = if waited {
                        CacheOutcome::Coalesced
                    } else {
                        CacheOutcome::Hit
                    };
                    return Ok(Computed {
                        value,
                        outcome,
                        fill: None,
                    });
                }
                Lookup::Leader(guard) => return lead(guard, settings, compute).await,
                Lookup::Busy(left) => {
                    waited = true;
                    let pause = pauses
                        .next()
                        .unwrap_or(Duration::from_millis(250))
                        .min(left.max(Duration::from_millis(1)));
                    let elapsed = began.elapsed();
                    if elapsed + pause > settings.max_wait {
                        return Err(FlightError::Cache(CacheError::WaitTimedOut(elapsed)));
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// What [`Cache::get_or_compute_from`] came to.
#[derive(Debug)]
pub struct Computed {
    /// The answer.
    pub value: CachedCompletion,
    /// Where it came from.
    pub outcome: CacheOutcome,
    /// The answer still to store, when this caller computed it.
    pub fill: Option<PendingFill>,
}

/// A computed answer not stored yet: the leader sends [`call`](Self::call) in
/// the job's chain after the call, or [`store`](Self::store)s it alone. Its
/// flight's lease is renewed until then; dropped unsent, it is stored in the
/// background.
#[derive(Debug)]
#[must_use = "send call() in a chain, or store()"]
pub struct PendingFill {
    guard: Option<FlightGuard>,
    encoded: String,
    ttl: Duration,
    /// Renews the flight's lease until the fill is sent (aborted on drop).
    _renewer: AbortOnDropHandle<()>,
}

impl PendingFill {
    /// The [`FILL`] call storing the answer and releasing the flight.
    pub fn call(mut self) -> Option<Call> {
        let mut guard = self.guard.take()?;
        guard.settled = true;
        Some(
            Call::new(&FILL)
                .key(guard.cache.value_key(&guard.key))
                .key(guard.cache.lock_key(&guard.key))
                .arg(&guard.token)
                .arg(std::mem::take(&mut self.encoded))
                .arg(millis(self.ttl)),
        )
    }

    /// Stores the answer now, on its own; a failure is logged.
    pub async fn store(mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        store(guard, std::mem::take(&mut self.encoded), self.ttl).await;
    }
}

impl Drop for PendingFill {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (encoded, ttl) = (std::mem::take(&mut self.encoded), self.ttl);
        runtime.spawn(store(guard, encoded, ttl));
    }
}

async fn store(guard: FlightGuard, encoded: String, ttl: Duration) {
    let key = guard.key.clone();
    if let Err(error) = guard.fill_encoded(encoded, ttl).await {
        tracing::warn!(key = %key, error = %error,
            "Cannot store an AI answer in the cache; identical requests will call again.");
    }
}

/// Computes as the leader, renewing the lease meanwhile (and, for an
/// answer, until it is stored: [`PendingFill`]), and settles a failed flight.
async fn lead<F, Fut, E>(
    guard: FlightGuard,
    settings: &CacheSettings,
    compute: F,
) -> Result<Computed, FlightError<E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<CachedCompletion, E>>,
{
    // A task of its own, so renewing never delays polling the computation;
    // aborted when the answer is stored or this future is dropped. Boxed: its
    // future (a Redis call and a timer, about 13 KB) would otherwise be moved
    // through tokio's task cell several times per job.
    let renewer = AbortOnDropHandle::new(tokio::spawn(Box::pin(renew_until_aborted(
        guard.cache.clone(),
        guard.key.clone(),
        guard.token.clone(),
        guard.lease,
    ))));
    match compute().await {
        Ok(value) => Ok(Computed {
            fill: Some(PendingFill {
                guard: Some(guard),
                encoded: encode(&value),
                ttl: settings.ttl,
                _renewer: renewer,
            }),
            value,
            outcome: CacheOutcome::Miss,
        }),
        Err(error) => {
            drop(renewer);
            let key = guard.key.clone();
            if let Err(release) = guard.abandon().await {
                tracing::warn!(key = %key, error = %release,
                    "Cannot release a failed flight; waiters take over when its lease ends.");
            }
            Err(FlightError::Compute(error))
        }
    }
}

async fn renew_until_aborted(cache: Cache, key: CacheKey, token: String, lease: Duration) {
    let mut ticks = tokio::time::interval(lease / 3);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match renew(&cache, &key, &token, lease).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(key = %key,
                    "Lost a cache flight's lock (lease lapsed); another worker may call too.");
                return;
            }
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "Cannot renew a cache flight's lease.");
            }
        }
    }
}

async fn renew(
    cache: &Cache,
    key: &CacheKey,
    token: &str,
    lease: Duration,
) -> Result<bool, CacheError> {
    let call = Call::new(&RENEW)
        .key(cache.lock_key(key))
        .arg(token)
        .arg(millis(lease));
    let renewed: i64 = cache
        .redis
        .run_call(cache.timeout, &cache.script, call)
        .await?;
    Ok(renewed == 1)
}

async fn release(cache: &Cache, key: &CacheKey, token: &str) -> Result<(), CacheError> {
    let call = Call::new(&RELEASE).key(cache.lock_key(key)).arg(token);
    cache
        .redis
        .run_call::<i64>(cache.timeout, &cache.script, call)
        .await?;
    Ok(())
}

impl FlightGuard {
    /// The key being computed.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Extends the claim by its lease; `false` if it was lost (lapsed and maybe
    /// taken by another caller).
    pub async fn renew(&self) -> Result<bool, CacheError> {
        renew(&self.cache, &self.key, &self.token, self.lease).await
    }

    /// Stores the answer for `ttl` and releases the claim, in one step.
    pub async fn fill(self, value: &CachedCompletion, ttl: Duration) -> Result<(), CacheError> {
        self.fill_encoded(encode(value), ttl).await
    }

    async fn fill_encoded(mut self, encoded: String, ttl: Duration) -> Result<(), CacheError> {
        self.settled = true;
        let call = Call::new(&FILL)
            .key(self.cache.value_key(&self.key))
            .key(self.cache.lock_key(&self.key))
            .arg(&self.token)
            .arg(encoded)
            .arg(millis(ttl));
        self.cache
            .redis
            .run_call::<i64>(self.cache.timeout, &self.cache.script, call)
            .await?;
        Ok(())
    }

    /// Releases the claim without an answer (the computation failed), so a
    /// waiter takes over at once.
    pub async fn abandon(mut self) -> Result<(), CacheError> {
        self.settled = true;
        release(&self.cache, &self.key, &self.token).await
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (cache, key, token) = (self.cache.clone(), self.key.clone(), self.token.clone());
        runtime.spawn(async move {
            if let Err(error) = release(&cache, &key, &token).await {
                tracing::warn!(key = %key, error = %error,
                    "Cannot release an abandoned cache flight; it lapses with its lease.");
            }
        });
    }
}
