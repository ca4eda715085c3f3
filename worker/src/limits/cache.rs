//! The AI response cache, shared by the fleet: identical requests within a TTL
//! get the stored answer, skipping the limiter and the provider.
//!
//! - [`CacheKey`]: SHA-256 of the pipeline's cache namespace, the provider, the
//!   model and the canonical request (object keys sorted), so tenants never share
//!   entries and field order never splits them.
//! - [`CachedCompletion`]: the answer (text, usage, model), stored as JSON at
//!   `{ns}:cache:{<sha256>}` with the pipeline's TTL.
//! - [`cacheable`]: which requests may be cached at all.
//! - Single flight (`flight`): N identical concurrent requests, across any
//!   number of workers, make one provider call — [`Cache::get_or_compute`].
//!
//! Every operation is bounded by `redis.timeout`; failures come back as
//! [`CacheError`], distinct from the computation's own errors, so the worker can
//! bypass the cache when Redis is down instead of failing the job.

mod flight;

use std::time::Duration;

use hookfleet_common::redis::Pool;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use hookfleet_common::redis::chain::ChainScript;
use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::{RedisError, redis};
use hookfleet_common::topology::Topology;

pub use flight::{
    Computed, FILL, FlightError, FlightGuard, LOOKUP, Lookup, LookupReply, PendingFill,
};
pub use flight::{RELEASE as FLIGHT_RELEASE, RENEW as FLIGHT_RENEW};

/// What a cache lookup came to, for `cache_requests_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The answer was stored already.
    Hit,
    /// Not stored: this caller computed it (and stored it).
    Miss,
    /// Another caller was computing it; this one waited for its answer.
    Coalesced,
}

impl CacheOutcome {
    /// `hit`, `miss` or `coalesced`: the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
        }
    }
}

/// Why the cache could not answer. The caller should carry on without it.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis failed or timed out.
    #[error("cache unavailable")]
    Redis(#[from] RedisError),
    /// The request could not be encoded for its key.
    #[error("cannot encode the request for its cache key")]
    Encode(#[source] serde_json::Error),
    /// Another worker's identical call took longer than the pipeline's
    /// `cache.max_wait`.
    #[error("waited {0:?} for another worker's identical call")]
    WaitTimedOut(Duration),
}

/// An AI answer as the cache stores it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedCompletion {
    /// The model's answer.
    pub text: String,
    /// Prompt tokens the provider reported.
    pub input_tokens: u64,
    /// Completion tokens the provider reported.
    pub output_tokens: u64,
    /// The model that answered, as the provider reported it.
    pub model: Option<String>,
}

/// The identity of a request in the cache: a lowercase hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

/// Bumped when the key derivation or the stored value's shape changes, so old
/// entries are simply never read again.
const KEY_VERSION: &[u8] = b"hookfleet-cache/1";

impl CacheKey {
    /// The key of `request` (messages and parameters, anything serializable)
    /// sent to `provider`/`model` by a pipeline with cache namespace
    /// `namespace`. Each part is length-prefixed, so no two different tuples
    /// hash the same bytes.
    pub fn new(
        namespace: &str,
        provider: &str,
        model: &str,
        request: &impl Serialize,
    ) -> Result<Self, CacheError> {
        let value = serde_json::to_value(request).map_err(CacheError::Encode)?;
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical);
        let mut hasher = Sha256::new();
        hasher.update(KEY_VERSION);
        for part in [namespace, provider, model, canonical.as_str()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        Ok(Self(hex::encode(hasher.finalize().as_slice())))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// JSON with object keys sorted at every level: one text per value, whatever
/// order the fields were built in (and whether or not serde_json preserves it).
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The cache in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    redis: SharedConnection,
    topology: Topology,
    timeout: Duration,
    script: ChainScript,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("namespace", &self.topology.namespace())
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Each Redis call gives up after `timeout` (`redis.timeout`). Does no I/O.
    pub fn new(pool: Pool, topology: Topology, timeout: Duration) -> Self {
        Self {
            redis: SharedConnection::new(pool),
            topology,
            timeout,
            script: ChainScript::new(&super::STEPS),
        }
    }

    /// `{ns}:cache:{<sha256>}`: the stored answer. The hash tag puts it in one
    /// Redis Cluster slot with its flight lock.
    pub fn value_key(&self, key: &CacheKey) -> String {
        self.topology.redis_key(&["cache", &format!("{{{key}}}")])
    }

    /// `{ns}:cache:{<sha256>}:lock`: the single-flight claim.
    pub fn lock_key(&self, key: &CacheKey) -> String {
        self.topology
            .redis_key(&["cache", &format!("{{{key}}}"), "lock"])
    }

    /// The stored answer, if any. An entry that no longer decodes is deleted
    /// and reported as absent.
    pub async fn get(&self, key: &CacheKey) -> Result<Option<CachedCompletion>, CacheError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.value_key(key));
        let raw: Option<String> = self.redis.query(self.timeout, &cmd).await?;
        match raw {
            None => Ok(None),
            Some(raw) => self.decode(key, &raw).await,
        }
    }

    /// Stores an answer for `ttl`.
    pub async fn put(
        &self,
        key: &CacheKey,
        value: &CachedCompletion,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.value_key(key))
            .arg(encode(value))
            .arg("PX")
            .arg(millis(ttl));
        self.redis.query::<()>(self.timeout, &cmd).await?;
        Ok(())
    }

    /// `raw` decoded; an undecodable entry (written by another version) is
    /// deleted so it is recomputed rather than failing every lookup until it
    /// expires.
    async fn decode(
        &self,
        key: &CacheKey,
        raw: &str,
    ) -> Result<Option<CachedCompletion>, CacheError> {
        match serde_json::from_str(raw) {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                tracing::warn!(key = %key, error = %error, "Dropping an unreadable cache entry.");
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.value_key(key));
                self.redis.query::<i64>(self.timeout, &cmd).await?;
                Ok(None)
            }
        }
    }
}

fn encode(value: &CachedCompletion) -> String {
    // A struct of strings and integers always serializes.
    serde_json::to_string(value).unwrap_or_default()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cacheable;
    use serde_json::json;

    #[test]
    fn only_deterministic_requests_are_cacheable_unless_opted_in() {
        assert!(cacheable(Some(0.0), false));
        assert!(!cacheable(Some(0.2), false));
        assert!(
            !cacheable(None, false),
            "unset is the provider's sampling default"
        );
        assert!(cacheable(Some(0.7), true));
        assert!(cacheable(None, true));
    }

    #[test]
    fn the_key_ignores_field_order_but_not_content() {
        let a = json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.0});
        let b = json!({"temperature": 0.0, "messages": [{"content": "hi", "role": "user"}]});
        let key = |ns, req: &Value| CacheKey::new(ns, "openai", "gpt-4o-mini", req).unwrap();
        assert_eq!(key("t", &a), key("t", &b));
        assert_ne!(key("t", &a), key("u", &a), "tenants never share entries");
        let c = json!({"messages": [{"role": "user", "content": "hi!"}], "temperature": 0.0});
        assert_ne!(key("t", &a), key("t", &c));
        let other_model = CacheKey::new("t", "openai", "gpt-4o", &a).unwrap();
        assert_ne!(key("t", &a), other_model);
        assert_eq!(key("t", &a).as_str().len(), 64);
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        let req = json!({});
        let one = CacheKey::new("ab", "c", "m", &req).unwrap();
        let two = CacheKey::new("a", "bc", "m", &req).unwrap();
        assert_ne!(one, two);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut out = String::new();
        write_canonical(
            &json!({"b": {"y": 1, "x": [true, null]}, "a": "é\""}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":"é\"","b":{"x":[true,null],"y":1}}"#);
    }
}
