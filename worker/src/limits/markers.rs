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
//!   instead of making a second AI call. The holder renews it (every third of
//!   the TTL) for as long as its run lasts, so a slow run never loses it.
//!
//! - `{ns}:sent:{pipeline}:{message_id}:{sink}` — set (with `worker.done_ttl`)
//!   once one sink confirmed delivery (an HTTP sink's 2xx). When another sink of
//!   the pipeline fails and the job is retried, the sinks already delivered are
//!   skipped, so a CRM outage never posts the chat escalation twice.
//!
//! - `{ns}:failed:{pipeline}:{message_id}:{replays}` — set (with
//!   `worker.done_ttl`) once the pipeline's permanent failure was confirmed in
//!   the DLQ as its own letter. The event's retries skip the pipeline, as a
//!   done one; a replay (`hf-replays` + 1) runs it again.
//! - `{ns}:settled:{message_id}:{copy}` — set (with `worker.done_ttl`) once one
//!   delivered copy of the job (`copy`: its `hf-copy` header, `0` for ingest's)
//!   was settled by a confirmed retry or dead-letter copy. If the ack is then
//!   lost, the redelivery is acked without calling the AI or publishing again.
//!
//! A claim takes the lease, then checks the three "already handled" keys, so a
//! copy that waited for a run sees what that run recorded before letting go.
//!
//! Ordering keeps this correct: completion writes `done` before it drops the
//! lease, and a claim checks `done` after taking the lease, so whoever takes a
//! released lease sees a finished job. Claim and completion are each one
//! script ([`CLAIM`], [`COMPLETE`]), steps of the job's chains (`crate::limits`).
//! The window left — a crash after the result was confirmed but before `done` was
//! written — repeats one job, which at-least-once delivery allows.

use std::time::Duration;

use hookfleet_common::redis::Pool;

use hookfleet_common::redis::chain::{Call, ChainScript, Step};
use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::{RedisError, redis};
use hookfleet_common::topology::Topology;

/// Takes the lease (KEYS[1]) for ARGV[1] for ARGV[2] ms unless another run
/// holds it, then checks done, failed and settled (KEYS[2..4]). Replies
/// `{0, 0}` claimed; `{1|2|3, 0}` done, failed or settled (our lease dropped
/// again); `{4, pttl}` busy. Anything but claimed stops the chain: the cache
/// lookup and limiter booking behind it are for a run that goes ahead.
pub static CLAIM: Step = Step {
    name: "markers.claim",
    lua: r"
function(KEYS, ARGV)
local taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local m = redis.call('MGET', KEYS[4], KEYS[2], KEYS[3])
local handled = 0
if m[1] then handled = 3 elseif m[2] then handled = 1 elseif m[3] then handled = 2 end
if handled ~= 0 then
  if taken then redis.call('DEL', KEYS[1]) end
  return {handled, 0}, true
end
if not taken then return {4, redis.call('PTTL', KEYS[1])}, true end
return {0, 0}
end
",
};

/// Marks the pipeline done (KEYS[1], ARGV[2] ms), then drops the lease
/// (KEYS[2]) if ARGV[1] still holds it: `done` is written before the lease
/// goes, so whoever takes it next sees a finished job.
pub static COMPLETE: Step = Step {
    name: "markers.complete",
    lua: r"
function(KEYS, ARGV)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
end
",
};

/// Deletes the lease only if `owner` still holds it.
pub static RELEASE: Step = Step {
    name: "markers.release",
    lua: r"
function(KEYS, ARGV)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
end
",
};

/// Extends the lease by ARGV[2] ms only if `owner` (ARGV[1]) still holds it.
pub static RENEW: Step = Step {
    name: "markers.renew",
    lua: r"
function(KEYS, ARGV)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
end
",
};

/// The answer to "may I run this pipeline for this message?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Yes: the lease is ours until we complete or release it.
    Claimed,
    /// No: its result was already published.
    Done,
    /// No: its permanent failure is already in the DLQ (this replay's).
    Failed,
    /// No: this very delivery was already settled (its ack was lost).
    Settled,
    /// Not yet: another run holds the lease, for at most this much longer.
    Busy(Duration),
}

/// [`CLAIM`]'s reply: what it found, and the lease's PTTL when busy.
pub type ClaimReply = (i64, i64);

impl From<ClaimReply> for Claim {
    fn from((found, pttl): ClaimReply) -> Self {
        match found {
            0 => Self::Claimed,
            1 => Self::Done,
            2 => Self::Failed,
            3 => Self::Settled,
            // PTTL is -2 when the lease vanished between SET and PTTL: try again soon.
            _ => Self::Busy(Duration::from_millis(u64::try_from(pttl).unwrap_or(0))),
        }
    }
}

/// Which delivered copy of an event a marker is about.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryId<'a> {
    /// The event's message id (every copy shares it).
    pub message_id: &'a str,
    /// `hf-replays`: which replay of the event.
    pub replays: u32,
    /// `hf-copy`: which retry or replay copy (`0` for the one ingest published).
    pub copy: &'a str,
}

/// Done markers and leases in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Markers {
    /// One multiplexed connection for every job (`shared` module docs).
    redis: SharedConnection,
    topology: Topology,
    timeout: Duration,
    script: ChainScript,
}

impl Markers {
    /// Each call gives up after `timeout`.
    pub fn new(pool: Pool, topology: Topology, timeout: Duration) -> Self {
        Self {
            redis: SharedConnection::new(pool),
            topology,
            timeout,
            script: ChainScript::new(&super::STEPS),
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

    /// `{ns}:failed:{pipeline}:{message_id}:{replays}`.
    pub fn failed_key(&self, pipeline: &str, message_id: &str, replays: u32) -> String {
        self.topology
            .redis_key(&["failed", pipeline, message_id, &replays.to_string()])
    }

    /// `{ns}:settled:{message_id}:{copy}`.
    pub fn settled_key(&self, message_id: &str, copy: &str) -> String {
        self.topology.redis_key(&["settled", message_id, copy])
    }

    /// Tries to claim the pipeline's run of `delivery` for `owner` for `lease_ttl`.
    pub async fn claim(
        &self,
        pipeline: &str,
        delivery: &DeliveryId<'_>,
        owner: &str,
        lease_ttl: Duration,
    ) -> Result<Claim, RedisError> {
        let call = self.claim_call(pipeline, delivery, owner, lease_ttl);
        let reply: ClaimReply = self.run(call).await?;
        Ok(Claim::from(reply))
    }

    /// The [`CLAIM`] call of [`claim`](Self::claim), for a job's own chain;
    /// read its reply with [`Claim::from`].
    pub fn claim_call(
        &self,
        pipeline: &str,
        delivery: &DeliveryId<'_>,
        owner: &str,
        lease_ttl: Duration,
    ) -> Call {
        let message_id = delivery.message_id;
        Call::new(&CLAIM)
            .key(self.lease_key(pipeline, message_id))
            .key(self.done_key(pipeline, message_id))
            .key(self.failed_key(pipeline, message_id, delivery.replays))
            .key(self.settled_key(message_id, delivery.copy))
            .arg(owner)
            .arg(millis(lease_ttl))
    }

    /// Whether `delivery` was already settled (its ack lost).
    pub async fn is_settled(&self, delivery: &DeliveryId<'_>) -> Result<bool, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(self.settled_key(delivery.message_id, delivery.copy));
        let (exists,): (bool,) = self.query(&pipe).await?;
        Ok(exists)
    }

    /// Records that `delivery` was settled (its retry or dead-letter copies
    /// confirmed), for `ttl`.
    pub async fn settle(&self, delivery: &DeliveryId<'_>, ttl: Duration) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.settled_key(delivery.message_id, delivery.copy))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl))
            .ignore();
        self.query::<()>(&pipe).await
    }

    /// Records that `pipeline`'s permanent failure of this replay of the event
    /// is in the DLQ, for `ttl`: its retries skip it.
    pub async fn fail(
        &self,
        pipeline: &str,
        delivery: &DeliveryId<'_>,
        ttl: Duration,
    ) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.failed_key(pipeline, delivery.message_id, delivery.replays))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl))
            .ignore();
        self.query::<()>(&pipe).await
    }

    /// Marks the pipeline done for `done_ttl` and drops `owner`'s lease.
    pub async fn complete(
        &self,
        pipeline: &str,
        message_id: &str,
        owner: &str,
        done_ttl: Duration,
    ) -> Result<(), RedisError> {
        let call = self.complete_call(pipeline, message_id, owner, done_ttl);
        self.run::<i64>(call).await.map(drop)
    }

    /// The [`COMPLETE`] call of [`complete`](Self::complete), for a job's own chain.
    pub fn complete_call(
        &self,
        pipeline: &str,
        message_id: &str,
        owner: &str,
        done_ttl: Duration,
    ) -> Call {
        Call::new(&COMPLETE)
            .key(self.done_key(pipeline, message_id))
            .key(self.lease_key(pipeline, message_id))
            .arg(owner)
            .arg(millis(done_ttl))
    }

    /// Extends `owner`'s lease to `lease_ttl` from now; `false` if `owner` no
    /// longer holds it (it lapsed, and maybe another run took it).
    pub async fn renew(
        &self,
        pipeline: &str,
        message_id: &str,
        owner: &str,
        lease_ttl: Duration,
    ) -> Result<bool, RedisError> {
        let call = Call::new(&RENEW)
            .key(self.lease_key(pipeline, message_id))
            .arg(owner)
            .arg(millis(lease_ttl));
        let renewed: i64 = self.run(call).await?;
        Ok(renewed == 1)
    }

    /// Drops `owner`'s lease without marking the pipeline done (the attempt failed).
    pub async fn release(
        &self,
        pipeline: &str,
        message_id: &str,
        owner: &str,
    ) -> Result<(), RedisError> {
        let call = Call::new(&RELEASE)
            .key(self.lease_key(pipeline, message_id))
            .arg(owner);
        self.run::<i64>(call).await.map(drop)
    }

    /// Runs a chain on this component's connection (a job's own chains go
    /// through here too).
    pub async fn run_chain(
        &self,
        chain: &hookfleet_common::redis::chain::Chain,
    ) -> Result<hookfleet_common::redis::chain::ChainReply, RedisError> {
        self.redis
            .run_chain(self.timeout, &self.script, chain)
            .await
    }

    async fn run<T: redis::FromRedisValue>(&self, call: Call) -> Result<T, RedisError> {
        self.redis.run_call(self.timeout, &self.script, call).await
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
