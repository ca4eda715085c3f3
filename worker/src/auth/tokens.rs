//! OAuth 2.0 access tokens shared by the fleet through Redis: one token request
//! per expiry for all workers, however many jobs need a token at once.
//!
//! This is the response cache's single flight (`limits::cache`), reused as is:
//! a token is an entry whose text is the token, under a key derived from the
//! token endpoint, client id, scope and audience (never the secret), stored
//! for the token's lifetime less the refresh margin. Of the callers that find
//! no token, one takes the flight's lock and asks the token endpoint; the
//! others wait for its answer, or take over if it fails. A token the API
//! rejected is [`discard`](TokenStore::discard)ed only if it is still the one
//! stored, so a fleet that sees the same 401 many times refreshes it once.
//!
//! When Redis cannot be asked, each caller fetches its own token: the request
//! still goes out, only the sharing is lost (logged), as the cache does for
//! AI answers. The token is a secret in Redis, like the cached answers.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::{Pool, redis};
use hookfleet_common::topology::Topology;
use secrecy::SecretString;
use tokio::time::Instant;

use crate::limits::cache::{Cache, CacheKey, CachedCompletion, Lookup};
use crate::metrics::WorkerMetrics;

/// Compares the stored entry's token and deletes it if it is `ARGV[1]`.
const DISCARD: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local ok, entry = pcall(cjson.decode, value)
if ok and entry.text == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A token as the token endpoint gave it (redacted in `Debug`).
#[derive(Debug)]
pub struct Fetched {
    /// The access token.
    pub token: SecretString,
    /// How long it may be stored (its lifetime less the refresh margin).
    pub keep: Duration,
}

/// The fleet's tokens in Redis. Cheap to clone.
#[derive(Clone)]
pub struct TokenStore {
    cache: Cache,
    redis: SharedConnection,
    timeout: Duration,
    metrics: WorkerMetrics,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore").finish_non_exhaustive()
    }
}

impl TokenStore {
    /// Each Redis call gives up after `timeout` (`redis.timeout`); token
    /// requests are counted in `metrics`. Does no I/O.
    pub fn new(pool: Pool, topology: Topology, timeout: Duration, metrics: WorkerMetrics) -> Self {
        Self {
            cache: Cache::new(pool.clone(), topology, timeout),
            redis: SharedConnection::new(pool),
            timeout,
            metrics,
        }
    }

    /// Where token requests are counted.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// The token under `key`: stored, fetched by this caller with `fetch`
    /// (once, holding the flight's lock for `lease`), or fetched meanwhile by
    /// another caller anywhere in the fleet.
    pub async fn token<F, Fut, E>(
        &self,
        key: &CacheKey,
        lease: Duration,
        fetch: F,
    ) -> Result<SecretString, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, E>>,
    {
        let began = Instant::now();
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(250))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            match self.cache.lookup(key, lease).await {
                Ok(Lookup::Hit(entry)) => return Ok(SecretString::from(entry.text)),
                Ok(Lookup::Leader(guard)) => {
                    let fetched = match fetch().await {
                        Ok(fetched) => fetched,
                        Err(error) => {
                            // Let a waiter try at once; a lock left behind lapses anyway.
                            let _ = guard.abandon().await;
                            return Err(error);
                        }
                    };
                    if let Err(error) = guard.fill(&entry(&fetched), fetched.keep).await {
                        tracing::warn!(error = %error,
                            "Cannot share an OAuth token through Redis; other workers fetch their own.");
                    }
                    return Ok(fetched.token);
                }
                Ok(Lookup::Busy(left)) if began.elapsed() < lease * 2 => {
                    let pause = pauses.next().unwrap_or(Duration::from_millis(250));
                    tokio::time::sleep(pause.min(left.max(Duration::from_millis(1)))).await;
                }
                Ok(Lookup::Busy(_)) => {
                    tracing::warn!(
                        "Waited too long for another worker's OAuth token request; fetching one unshared."
                    );
                    return fetch().await.map(|f| f.token);
                }
                Err(error) => {
                    tracing::warn!(error = %error, "Redis unavailable for OAuth tokens; fetching one unshared.");
                    return fetch().await.map(|f| f.token);
                }
            }
        }
    }

    /// Forgets `token` under `key` if it is still the stored one (the API
    /// answered 401 to it), so the next caller fetches a fresh one.
    pub async fn discard(&self, key: &CacheKey, token: &str) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(DISCARD)
            .arg(1)
            .arg(self.cache.value_key(key))
            .arg(token);
        if let Err(error) = self.redis.query::<i64>(self.timeout, &cmd).await {
            tracing::warn!(error = %error, "Cannot discard a rejected OAuth token; it lapses with its lifetime.");
        }
    }

    /// Whether a token is stored under `key` (for tests and operators).
    pub async fn is_stored(&self, key: &CacheKey) -> bool {
        matches!(self.cache.get(key).await, Ok(Some(_)))
    }
}

/// The token as a cache entry: its text is the token; there is no usage.
fn entry(fetched: &Fetched) -> CachedCompletion {
    use secrecy::ExposeSecret;
    CachedCompletion {
        text: fetched.token.expose_secret().to_owned(),
        input_tokens: 0,
        output_tokens: 0,
        model: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A store on the local Redis under a throwaway namespace; connects lazily.
    pub(crate) fn store() -> TokenStore {
        let config = hookfleet_common::config::RedisConfig::default();
        let pool = hookfleet_common::redis::pool(&config).unwrap();
        let amqp = hookfleet_common::config::AmqpConfig::default();
        let topology = Topology::new(&format!("t-{}", ulid::Ulid::new()), &amqp);
        let metrics = WorkerMetrics::new().unwrap();
        TokenStore::new(pool, topology, config.timeout, metrics)
    }
}
