//! Deduplication of inbound events by the provider's event id.
//!
//! `SET {ns}:seen:{source}:{event_id} {message_id} NX EX ttl` claims an id before the
//! event is published. If the publish fails, the claim is released so the sender's
//! retry is accepted rather than mistaken for a duplicate. The release deletes the
//! key only if it still holds our message id (a Lua compare-and-delete), so a slow
//! failure can never release another request's claim.

use std::time::Duration;

use hookfleet_common::redis::Pool;

use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::{RedisError, redis};
use hookfleet_common::topology::Topology;

/// The outcome of claiming an event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First sighting: the id is now ours.
    New,
    /// Seen before; holds the message id the first one was given.
    Duplicate(String),
}

/// Claims and releases event ids in Redis.
#[derive(Clone)]
pub struct Dedupe {
    /// One multiplexed connection for every request (`shared` module docs).
    redis: SharedConnection,
    topology: Topology,
    ttl: Duration,
    timeout: Duration,
}

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

impl Dedupe {
    /// Remembers ids for `ttl`; each call gives up after `timeout`.
    pub fn new(pool: Pool, topology: Topology, ttl: Duration, timeout: Duration) -> Self {
        Self {
            redis: SharedConnection::new(pool),
            topology,
            ttl,
            timeout,
        }
    }

    fn key(&self, source: &str, event_id: &str) -> String {
        self.topology.redis_key(&["seen", source, event_id])
    }

    /// Claims `event_id` for `message_id`.
    pub async fn claim(
        &self,
        source: &str,
        event_id: &str,
        message_id: &str,
    ) -> Result<Claim, RedisError> {
        let key = self.key(source, event_id);
        let ttl_ms = u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        // SET ... NX GET returns the old value when the key existed (Redis ≥ 7).
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key)
            .arg(message_id)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ttl_ms);
        let previous: Option<String> = self.redis.query(self.timeout, &cmd).await?;
        Ok(match previous {
            None => Claim::New,
            Some(first) => Claim::Duplicate(first),
        })
    }

    /// The message id `event_id` of `source` was accepted under, while its
    /// claim lasts (`ingest.dedup_ttl`).
    pub async fn lookup(&self, source: &str, event_id: &str) -> Result<Option<String>, RedisError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(source, event_id));
        self.redis.query(self.timeout, &cmd).await
    }

    /// Releases a claim made by `message_id` (its publish failed).
    pub async fn release(
        &self,
        source: &str,
        event_id: &str,
        message_id: &str,
    ) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE)
            .arg(1)
            .arg(self.key(source, event_id))
            .arg(message_id);
        self.redis.query::<i64>(self.timeout, &cmd).await.map(drop)
    }
}
