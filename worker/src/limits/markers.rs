//! Effect markers: what makes a redelivered job cost nothing the second time.
//!
//! Two keys per pipeline and message id:
//!
//! - `{ns}:done:{pipeline}:{message_id}` — set (with `worker.done_ttl`) once the
//!   pipeline's result is confirmed by its sinks. A redelivery that finds it acks
//!   without calling the AI or publishing again.
//! - `{ns}:lease:{pipeline}:{message_id}` — a claim held (with `worker.lease_ttl`)
//!   while a worker runs the pipeline. A copy redelivered while the first is still
//!   running (its channel died mid-call) sees the claim and waits for the outcome
//!   instead of making a second AI call.
//!
//! - `{ns}:sent:{pipeline}:{message_id}:{sink}` — set (with `worker.done_ttl`)
//!   once one sink confirmed delivery (an HTTP sink's 2xx). When another sink of
//!   the pipeline fails and the job is retried, the sinks already delivered are
//!   skipped, so a CRM outage never posts the chat escalation twice.
//!
//! Ordering, not multi-key scripts, keeps this correct (and Redis-Cluster safe):
//! completion writes `done` before it drops the lease, and a claim checks `done`
//! after taking the lease, so whoever takes a released lease sees a finished job.
//! The window left — a crash after the result was confirmed but before `done` was
//! written — repeats one job, which at-least-once delivery allows.

use std::time::Duration;

use hookfleet_common::redis::Pool;

use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::{RedisError, redis};
use hookfleet_common::topology::Topology;

/// Deletes the lease only if `owner` still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The answer to "may I run this pipeline for this message?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Yes: the lease is ours until we complete or release it.
    Claimed,
    /// No: its result was already published.
    Done,
    /// Not yet: another run holds the lease, for at most this much longer.
    Busy(Duration),
}

/// Done markers and leases in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Markers {
    /// One multiplexed connection for every job (`shared` module docs).
    redis: SharedConnection,
    topology: Topology,
    timeout: Duration,
}

impl Markers {
    /// Each call gives up after `timeout`.
    pub fn new(pool: Pool, topology: Topology, timeout: Duration) -> Self {
        Self {
            redis: SharedConnection::new(pool),
            topology,
            timeout,
        }
    }

    /// `{ns}:done:{pipeline}:{message_id}`.
    pub fn done_key(&self, pipeline: &str, message_id: &str) -> String {
        self.topology.redis_key(&["done", pipeline, message_id])
    }

    /// `{ns}:lease:{pipeline}:{message_id}`.
    pub fn lease_key(&self, pipeline: &str, message_id: &str) -> String {
        self.topology.redis_key(&["lease", pipeline, message_id])
    }

    /// `{ns}:sent:{pipeline}:{message_id}:{sink}`.
    pub fn sent_key(&self, pipeline: &str, message_id: &str, sink: &str) -> String {
        self.topology
            .redis_key(&["sent", pipeline, message_id, sink])
    }

    /// Whether `sink` already delivered this message's result for `pipeline`.
    pub async fn is_sent(
        &self,
        pipeline: &str,
        message_id: &str,
        sink: &str,
    ) -> Result<bool, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(self.sent_key(pipeline, message_id, sink));
        let (exists,): (bool,) = self.query(&pipe).await?;
        Ok(exists)
    }

    /// Records that `sink` delivered this message's result, for `ttl`.
    pub async fn mark_sent(
        &self,
        pipeline: &str,
        message_id: &str,
        sink: &str,
        ttl: Duration,
    ) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.sent_key(pipeline, message_id, sink))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl))
            .ignore();
        self.query::<()>(&pipe).await
    }

    /// Tries to claim the pipeline's run for `owner` for `lease_ttl`.
    pub async fn claim(
        &self,
        pipeline: &str,
        message_id: &str,
        owner: &str,
        lease_ttl: Duration,
    ) -> Result<Claim, RedisError> {
        let lease = self.lease_key(pipeline, message_id);
        let done = self.done_key(pipeline, message_id);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&lease)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(millis(lease_ttl))
            .cmd("EXISTS")
            .arg(&done)
            .cmd("PTTL")
            .arg(&lease);
        let (taken, finished, pttl): (Option<String>, bool, i64) = self.query(&pipe).await?;
        match (taken.is_some(), finished) {
            (true, false) => Ok(Claim::Claimed),
            (true, true) => {
                self.release(pipeline, message_id, owner).await?;
                Ok(Claim::Done)
            }
            (false, true) => Ok(Claim::Done),
            // PTTL is -2 when the lease vanished between SET and PTTL: try again soon.
            (false, false) => Ok(Claim::Busy(Duration::from_millis(
                u64::try_from(pttl).unwrap_or(0),
            ))),
        }
    }

    /// Marks the pipeline done for `done_ttl` and drops `owner`'s lease.
    pub async fn complete(
        &self,
        pipeline: &str,
        message_id: &str,
        owner: &str,
        done_ttl: Duration,
    ) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.done_key(pipeline, message_id))
            .arg(owner)
            .arg("PX")
            .arg(millis(done_ttl))
            .ignore()
            .cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(self.lease_key(pipeline, message_id))
            .arg(owner)
            .ignore();
        self.query::<()>(&pipe).await
    }

    /// Drops `owner`'s lease without marking the pipeline done (the attempt failed).
    pub async fn release(
        &self,
        pipeline: &str,
        message_id: &str,
        owner: &str,
    ) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(self.lease_key(pipeline, message_id))
            .arg(owner)
            .ignore();
        self.query::<()>(&pipe).await
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.redis.query_pipeline(self.timeout, pipe).await
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
