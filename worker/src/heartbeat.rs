//! Each worker's heartbeat in Redis, and the fleet read back from them: what
//! the console's overview shows as the fleet's jobs in flight (delivered and
//! not yet acked) and its workers. A passive declare gives a queue's ready
//! messages and consumers, never its unacked ones, and the broker's
//! management API may not be there; the workers know their own.
//!
//! Every `worker.heartbeat_interval` a worker writes `{ns}:fleet:{name}` — a
//! [`Beat`]: its name, jobs in flight (at most its prefetch), prefetch, start
//! time and version — expiring after three intervals, and adds its name to the
//! set `{ns}:fleet`, which expires with the last beat. A worker that stops
//! cleanly deletes its beat; one that dies drops out when its beat expires.
//!
//! The beat is a timer task, never on a job's path: one Redis round trip per
//! interval per worker, whatever the load. A beat that fails is counted
//! (`hookfleet_worker_heartbeat_failures_total`), logged once per outage, and
//! tried again next interval; it changes nothing else.

use std::time::Duration;

use hookfleet_common::message::now_rfc3339;
use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::{Pool, RedisError, redis};
use hookfleet_common::telemetry::error_chain;
use hookfleet_common::topology::Topology;
use prometheus::{IntCounter, IntGauge};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// A beat lasts this many intervals: one or two missed beats are not a death.
const TTL_INTERVALS: u32 = 3;

/// One worker's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// The worker's name (its connection name and consumer tag).
    pub worker: String,
    /// Deliveries it is processing: taken from the queue, not yet acked.
    pub in_flight: i64,
    /// Its prefetch (`worker.concurrency`): the most it holds unacked.
    pub prefetch: u16,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its version.
    pub version: String,
    /// When this beat was written (RFC 3339).
    pub beat_at: String,
}

/// The fleet's heartbeats in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    redis: SharedConnection,
    topology: Topology,
    /// Each command gives up after this (`redis.timeout`).
    timeout: Duration,
}

impl Fleet {
    /// Does no I/O.
    pub fn new(pool: Pool, topology: Topology, timeout: Duration) -> Self {
        Self {
            redis: SharedConnection::new(pool),
            topology,
            timeout,
        }
    }

    fn set_key(&self) -> String {
        self.topology.redis_key(&["fleet"])
    }

    fn beat_key(&self, worker: &str) -> String {
        self.topology.redis_key(&["fleet", worker])
    }

    /// Writes `beat`, lasting `ttl`, in one round trip.
    pub async fn beat(&self, beat: &Beat, ttl: Duration) -> Result<(), RedisError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let json = serde_json::to_string(beat).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.beat_key(&beat.worker))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(self.set_key())
            .arg(&beat.worker)
            .ignore()
            .cmd("PEXPIRE")
            .arg(self.set_key())
            .arg(ttl_ms)
            .ignore();
        self.redis.query_pipeline(self.timeout, &pipe).await
    }

    /// Removes `worker`'s beat (it stopped).
    pub async fn leave(&self, worker: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.beat_key(worker))
            .ignore()
            .cmd("SREM")
            .arg(self.set_key())
            .arg(worker)
            .ignore();
        self.redis.query_pipeline(self.timeout, &pipe).await
    }

    /// Every live beat, by worker name. Names whose beat expired are dropped
    /// from the set on the way.
    pub async fn members(&self) -> Result<Vec<Beat>, RedisError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.set_key());
        let mut names: Vec<String> = self.redis.query(self.timeout, &cmd).await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        names.sort();
        let mut mget = redis::cmd("MGET");
        for name in &names {
            mget.arg(self.beat_key(name));
        }
        let beats: Vec<Option<String>> = self.redis.query(self.timeout, &mget).await?;
        let gone: Vec<&String> = names
            .iter()
            .zip(&beats)
            .filter(|(_, beat)| beat.is_none())
            .map(|(name, _)| name)
            .collect();
        if !gone.is_empty() {
            let mut srem = redis::cmd("SREM");
            srem.arg(self.set_key()).arg(gone);
            // Tidying only: a name left behind is dropped by the next read.
            let _: Result<i64, _> = self.redis.query(self.timeout, &srem).await;
        }
        Ok(beats
            .into_iter()
            .flatten()
            .filter_map(|json| serde_json::from_str(&json).ok())
            .collect())
    }
}

/// This worker's heartbeat task.
pub struct Heartbeat {
    /// Where beats go.
    pub fleet: Fleet,
    /// The worker's name.
    pub worker: String,
    /// Its prefetch.
    pub prefetch: u16,
    /// Its jobs in flight (`inflight_jobs`).
    pub in_flight: IntGauge,
    /// `worker_heartbeat_failures_total`.
    pub failures: IntCounter,
    /// Between beats.
    pub interval: Duration,
}

impl Heartbeat {
    /// Beats now and every interval until `stop`, then removes the beat.
    pub async fn run_until_stopped(self, stop: CancellationToken) {
        let started_at = now_rfc3339();
        let ttl = self.interval * TTL_INTERVALS;
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let beat = Beat {
                worker: self.worker.clone(),
                in_flight: self.in_flight.get(),
                prefetch: self.prefetch,
                started_at: started_at.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                beat_at: now_rfc3339(),
            };
            match self.fleet.beat(&beat, ttl).await {
                Ok(()) => failing = false,
                Err(e) => {
                    self.failures.inc();
                    // Logged once per outage, counted every time.
                    if !failing {
                        tracing::warn!(error = %error_chain(&e), "Cannot write the worker's heartbeat; the console's fleet view misses it.");
                    }
                    failing = true;
                }
            }
        }
        if let Err(e) = self.fleet.leave(&self.worker).await {
            tracing::debug!(error = %error_chain(&e), "Cannot remove the worker's heartbeat; it expires on its own.");
        }
    }
}
