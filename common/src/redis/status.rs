//! Event status: what became of an accepted event, read by ingest's
//! `GET /events/{id}` and written by ingest (accepted) and the workers
//! (processing, retrying, done, dead).
//!
//! One hash per message id, `{ns}:status:{message_id}`, expiring `status.ttl`
//! after its last write:
//!
//! - `replays`, `attempt`, `phase` — the rank of the state in `state`
//!   (absent while only ingest's `accepted` is there: the lowest rank);
//! - `state` — the current [`EventState`] as JSON;
//! - `event` — the event's [`EventInfo`] (set once);
//! - `pipeline:{name}` — each pipeline's [`PipelineSummary`] once it published.
//!
//! and beside it a list, `{ns}:status:{message_id}:history`: the last
//! [`HISTORY_LEN`] writes as [`Transition`]s (when, which state, why an attempt
//! failed, which pipelines published), so the console can show every retry
//! with its error. It is written by the same script call as the hash — no
//! extra round trip — and expires with it.
//!
//! **Never backwards.** Writers race: ingest writes `accepted` after the broker's
//! confirm, by which time a worker may already be processing; a retry copy may
//! start on another worker before the first one recorded `retrying`; a late
//! redelivered copy may start after `done`. So every write carries a rank —
//! (replays, attempt, phase) compared in that order, phase being 0 accepted,
//! 1 processing or retrying, 2 done or dead — and one Lua script applies it only
//! if it is not lower than the stored one. Equal ranks replace each other
//! (processing ↔ retrying within one attempt, which a limiter deferral repeats),
//! except a final state, which is written once per attempt. A DLQ replay raises
//! `replays`, so a replayed event can leave `dead` again. Ingest's `accepted`,
//! the lowest rank and written once per id, needs no script
//! ([`Statuses::first_write`]): `HSETNX` without rank fields leaves a worker's
//! earlier state and is replaced by its next one.
//!
//! The history keeps what the hash drops: every write goes on it, even one
//! whose rank is lower (a late `retrying` from one worker after another one
//! started the next attempt), except a second final state of the same rank.
//!
//! What it never holds: payloads, headers or secrets — only the event's names
//! and ids, error codes with a short detail, and each pipeline's output cut to
//! `status.max_output_bytes`.
//!
//! Status is a convenience, not a guarantee: writers log and count a failed
//! write and carry on (ingest's 202 and the worker's ack never wait on it
//! beyond `redis.timeout`).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::Pool;
use serde::{Deserialize, Serialize};

use super::chain::{Call, Chain, ChainScript, Step};
use super::shared::SharedConnection;
use super::{RedisError, redis};
use crate::config::StatusConfig;
use crate::message::{EventMeta, now_rfc3339, truncate};
use crate::topology::Topology;

/// The most transitions an event's history keeps (the latest ones).
pub const HISTORY_LEN: usize = 32;

/// Writes the state if its rank is not lower than the stored one, and appends
/// the transition to the history (module docs). KEYS[1] the hash, KEYS[2] the
/// history; ARGV: replays, attempt, phase, state JSON, event JSON, ttl (ms),
/// transition JSON, history length, then pairs of pipeline name and summary
/// JSON. Returns 1 if the state was written. A step of a chain
/// (`super::chain`), so a writer can send it in the same round trip as its
/// other Redis work.
pub static RECORD: Step = Step {
    name: "status.record",
    lua: r"
function(KEYS, ARGV)
local key = KEYS[1]
local r, a, p = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = redis.call('HMGET', key, 'replays', 'attempt', 'phase')
local newer, same, fresh = true, false, true
if cur[1] and cur[2] and cur[3] then
  fresh = false
  local cr, ca, cp = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
  if r ~= cr then newer = r > cr
  elseif a ~= ca then newer = a > ca
  elseif p ~= cp then newer = p > cp
  else newer = p < 2; same = true end
end
local fields = {}
if newer then
  fields = {'replays', r, 'attempt', a, 'phase', p, 'state', ARGV[4]}
end
if fresh then
  fields[#fields + 1] = 'event'
  fields[#fields + 1] = ARGV[5]
end
for i = 9, #ARGV, 2 do
  fields[#fields + 1] = 'pipeline:' .. ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
if newer or not same then
  local len = tonumber(ARGV[8])
  if redis.call('RPUSH', KEYS[2], ARGV[7]) > len then
    redis.call('LTRIM', KEYS[2], -len, -1)
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
redis.call('PEXPIRE', key, ARGV[6])
if newer then return 1 end
return 0
end
",
};

/// The event an id stands for: names and ids, never the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    /// The source it came in on.
    pub source: String,
    /// Its event type.
    pub event_type: String,
    /// The provider's event id, when the source has one.
    pub event_id: Option<String>,
    /// When ingest received it (RFC 3339).
    pub received_at: String,
}

impl From<&EventMeta> for EventInfo {
    fn from(meta: &EventMeta) -> Self {
        Self {
            source: meta.source.clone(),
            event_type: meta.event_type.clone(),
            event_id: meta.event_id.clone(),
            received_at: meta.received_at.clone(),
        }
    }
}

/// Where an event is. Serialized with its `state` name as a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EventState {
    /// Confirmed into the broker by ingest; no worker has started it yet.
    Accepted {
        /// When the broker confirmed it (RFC 3339).
        accepted_at: String,
    },
    /// A worker is running it.
    Processing {
        /// The attempt running, 1-based.
        attempt: u32,
        /// When it started (RFC 3339).
        started_at: String,
    },
    /// An attempt failed transiently (or the limiter deferred it); a copy waits
    /// in a retry queue.
    Retrying {
        /// Attempts used so far (a limiter deferral does not use one).
        attempt: u32,
        /// About when the next attempt starts: the retry tier's delay from now
        /// (RFC 3339).
        next_attempt_at: String,
    },
    /// Every matching pipeline published its result.
    Done {
        /// Attempts it took.
        attempts: u32,
        /// When the last result was confirmed (RFC 3339).
        completed_at: String,
    },
    /// Dead-lettered.
    Dead {
        /// `permanent`, `exhausted` or `poison` (`hf-error-class`).
        class: String,
        /// The bounded reason code (`ai_http_400`).
        reason: String,
        /// Where it failed (`hf-stage`).
        stage: String,
        /// The pipeline that failed, if one did.
        pipeline: Option<String>,
        /// The error chain, cut short.
        error: String,
        /// Attempts used.
        attempts: u32,
        /// When it was dead-lettered (RFC 3339).
        failed_at: String,
    },
}

impl EventState {
    /// The phase part of the rank (module docs).
    fn phase(&self) -> u8 {
        match self {
            Self::Accepted { .. } => 0,
            Self::Processing { .. } | Self::Retrying { .. } => 1,
            Self::Done { .. } | Self::Dead { .. } => 2,
        }
    }
}

/// One pipeline's published result, summarized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineSummary {
    /// The pipeline.
    pub pipeline: String,
    /// The provider that answered (configured name).
    pub provider: String,
    /// The model asked of it.
    pub model: String,
    /// `None` when the primary answered, else the fallback's index.
    pub fallback: Option<usize>,
    /// Whether the answer came from the response cache.
    pub cached: bool,
    /// The parsed JSON answer of a `json` pipeline, when it fits the limit.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub output_json: Option<serde_json::Value>,
    /// The answer's text, cut to the limit; absent when `output_json` holds it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub output: Option<String>,
    /// Whether `output` was cut.
    pub truncated: bool,
    /// When the result was produced (RFC 3339).
    pub completed_at: String,
}

impl PipelineSummary {
    /// Keeps `output_json` if its JSON fits in `limit` bytes, else `output` cut
    /// to `limit` bytes (on a character boundary).
    pub fn with_output(
        mut self,
        output: &str,
        output_json: Option<&serde_json::Value>,
        limit: usize,
    ) -> Self {
        if let Some(json) = output_json
            && serde_json::to_string(json).is_ok_and(|s| s.len() <= limit)
        {
            self.output_json = Some(json.clone());
            self.output = None;
            self.truncated = false;
            return self;
        }
        let cut = truncate(output, limit);
        self.truncated = cut.len() < output.len();
        self.output = Some(cut.to_owned());
        self.output_json = None;
        self
    }
}

/// Why an attempt failed: what a `retrying` or `dead` transition records
/// beside its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// The pipeline that failed, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The provider that pipeline calls first (configured name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model it asks of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The bounded reason code (`ai_http_503`).
    pub reason: String,
    /// Where it failed (`ai`, `sink`, …).
    pub stage: String,
    /// The error chain, cut short.
    pub error: String,
}

/// One entry of an event's history: one status write, as it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// When it was written (RFC 3339).
    pub at: String,
    /// The event's DLQ replays then.
    pub replays: u32,
    /// The attempt the writer ran (its rank; 0 for `accepted`).
    pub attempt: u32,
    /// The state written.
    pub state: EventState,
    /// Why the attempt failed, for a `retrying` or `dead` state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// The pipelines that published in the writer's run, without their output
    /// (the hash keeps that).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<PipelineSummary>,
}

/// One status write.
#[derive(Debug, Clone)]
pub struct Update<'a> {
    /// The event.
    pub event: &'a EventMeta,
    /// The attempt the writer ran (1-based; 0 for `accepted`): the rank, not
    /// necessarily what the state shows.
    pub attempt: u32,
    /// The new state.
    pub state: EventState,
    /// Pipelines that published during this run.
    pub pipelines: Vec<PipelineSummary>,
    /// Why the attempt failed (a retry or a dead letter), for the history.
    pub cause: Option<Cause>,
}

impl<'a> Update<'a> {
    /// Ingest's write: `event` confirmed into the broker just now (rank 0).
    pub fn accepted(event: &'a EventMeta) -> Self {
        Self {
            event,
            attempt: 0,
            state: EventState::Accepted {
                accepted_at: now_rfc3339(),
            },
            pipelines: Vec::new(),
            cause: None,
        }
    }

    /// The history entry this write appends.
    fn transition(&self) -> Transition {
        Transition {
            at: now_rfc3339(),
            replays: self.event.replays,
            attempt: self.attempt,
            state: self.state.clone(),
            cause: self.cause.clone(),
            pipelines: self
                .pipelines
                .iter()
                .map(|p| PipelineSummary {
                    output_json: None,
                    output: None,
                    ..p.clone()
                })
                .collect(),
        }
    }
}

/// What `GET /events/{id}` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventStatus {
    /// The message id.
    pub id: String,
    /// The event, when recorded.
    #[serde(flatten)]
    pub event: Option<EventInfo>,
    /// Where it is.
    #[serde(flatten)]
    pub state: EventState,
    /// DLQ replays so far.
    pub replays: u32,
    /// Results published so far, by pipeline name.
    pub pipelines: Vec<PipelineSummary>,
}

/// The status hashes in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Statuses {
    /// One multiplexed connection for every request (`shared` module docs).
    redis: SharedConnection,
    topology: Topology,
    config: StatusConfig,
    timeout: Duration,
    /// The script `record` runs ([`RECORD`] alone).
    script: ChainScript,
}

impl Statuses {
    /// Each call gives up after `timeout`. Does no I/O.
    pub fn new(pool: Pool, topology: Topology, config: StatusConfig, timeout: Duration) -> Self {
        Self {
            redis: SharedConnection::new(pool),
            topology,
            config,
            timeout,
            script: ChainScript::new(&[&RECORD]),
        }
    }

    /// Whether statuses are recorded and served (`status.enabled`).
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The longest output kept per pipeline (`status.max_output_bytes`).
    pub fn max_output_bytes(&self) -> usize {
        self.config.max_output_bytes
    }

    /// `{ns}:status:{message_id}`.
    pub fn key(&self, message_id: &str) -> String {
        self.topology.redis_key(&["status", message_id])
    }

    /// `{ns}:status:{message_id}:history`.
    pub fn history_key(&self, message_id: &str) -> String {
        self.topology.redis_key(&["status", message_id, "history"])
    }

    /// Records `update` unless a later state is already stored; returns whether
    /// the state was written (pipeline summaries are kept either way). A no-op
    /// returning `false` when disabled.
    pub async fn record(&self, update: &Update<'_>) -> Result<bool, RedisError> {
        let Some(call) = self.record_call(update) else {
            return Ok(false);
        };
        let mut chain = Chain::new();
        let at = chain.push(call);
        let reply = self
            .redis
            .run_chain(self.timeout, &self.script, &chain)
            .await?;
        Ok(reply.get::<i64>(at)? == Some(1))
    }

    /// The [`RECORD`] call writing `update`, to send in a writer's own chain;
    /// `None` when statuses are disabled. Its reply is 1 if the state was written.
    pub fn record_call(&self, update: &Update<'_>) -> Option<Call> {
        if !self.config.enabled {
            return None;
        }
        let id = &update.event.message_id;
        let mut call = Call::new(&RECORD)
            .key(self.key(id))
            .key(self.history_key(id))
            .arg(update.event.replays)
            .arg(update.attempt)
            .arg(update.state.phase())
            .arg(to_json(&update.state))
            .arg(to_json(&EventInfo::from(update.event)))
            .arg(
                u64::try_from(self.config.ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(to_json(&update.transition()))
            .arg(HISTORY_LEN);
        for summary in &update.pipelines {
            call = call.arg(&summary.pipeline).arg(to_json(summary));
        }
        Some(call)
    }

    /// Appends `update` to `pipe` as plain commands, when it is an event's
    /// lowest-ranked write — ingest's `accepted` (rank 0, 0, 0), never written
    /// twice for one id — and returns whether it did (`false`: send
    /// [`record_call`](Self::record_call) instead). It sets `state` and
    /// `event` with `HSETNX` and no rank fields: a worker that wrote first
    /// keeps its later state, and one that writes next finds no rank, the
    /// lowest, and overwrites it — what [`RECORD`] would decide either way.
    /// The history entry goes on regardless, as [`RECORD`] puts it. No
    /// script: a fraction of [`RECORD`]'s cost in Redis.
    pub fn first_write(&self, update: &Update<'_>, pipe: &mut redis::Pipeline) -> bool {
        let lowest = update.event.replays == 0 && update.attempt == 0 && update.state.phase() == 0;
        if !self.config.enabled || !lowest || !update.pipelines.is_empty() {
            return false;
        }
        let id = &update.event.message_id;
        let (key, history) = (self.key(id), self.history_key(id));
        let ttl = u64::try_from(self.config.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        pipe.cmd("HSETNX")
            .arg(&key)
            .arg("state")
            .arg(to_json(&update.state))
            .ignore();
        pipe.cmd("HSETNX")
            .arg(&key)
            .arg("event")
            .arg(to_json(&EventInfo::from(update.event)))
            .ignore();
        pipe.cmd("RPUSH")
            .arg(&history)
            .arg(to_json(&update.transition()))
            .ignore();
        pipe.cmd("PEXPIRE").arg(&history).arg(ttl).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        true
    }

    /// The status of `message_id`; `None` if unknown, expired or disabled.
    pub async fn get(&self, message_id: &str) -> Result<Option<EventStatus>, RedisError> {
        if !self.config.enabled {
            return Ok(None);
        }
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.key(message_id));
        let fields: HashMap<String, String> = self.redis.query(self.timeout, &cmd).await?;
        let Some(state) = fields
            .get("state")
            .and_then(|s| serde_json::from_str::<EventState>(s).ok())
        else {
            return Ok(None);
        };
        let mut pipelines: Vec<PipelineSummary> = fields
            .iter()
            .filter(|(k, _)| k.starts_with("pipeline:"))
            .filter_map(|(_, v)| serde_json::from_str(v).ok())
            .collect();
        pipelines.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
        Ok(Some(EventStatus {
            id: message_id.to_owned(),
            event: fields
                .get("event")
                .and_then(|e| serde_json::from_str(e).ok()),
            state,
            replays: fields
                .get("replays")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            pipelines,
        }))
    }
}

impl Statuses {
    /// The history of `message_id`, oldest write first; empty if unknown,
    /// expired or disabled. Entries that do not parse are left out.
    pub async fn history(&self, message_id: &str) -> Result<Vec<Transition>, RedisError> {
        if !self.config.enabled {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.history_key(message_id)).arg(0).arg(-1);
        let entries: Vec<String> = self.redis.query(self.timeout, &cmd).await?;
        Ok(entries
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .collect())
    }
}

/// Our state types always serialize (strings, numbers, JSON values); an
/// empty string would read back as "unknown", never as a wrong state.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary() -> PipelineSummary {
        PipelineSummary {
            pipeline: "triage".into(),
            provider: "mock".into(),
            model: "m".into(),
            fallback: None,
            cached: false,
            output_json: None,
            output: None,
            truncated: false,
            completed_at: "t".into(),
        }
    }

    #[test]
    fn outputs_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
        let s = summary().with_output("ééé", None, 3);
        assert_eq!(s.output.as_deref(), Some("é"));
        assert!(s.truncated);
    }

    #[test]
    fn json_output_is_kept_parsed_when_it_fits() {
        let value = json!({ "sentiment": "negative" });
        let s = summary().with_output(&value.to_string(), Some(&value), 100);
        assert_eq!(s.output_json, Some(value.clone()));
        assert_eq!(s.output, None);
        let s = summary().with_output(&value.to_string(), Some(&value), 10);
        assert_eq!(s.output_json, None);
        assert_eq!(s.output.as_deref(), Some("{\"sentimen"));
        assert!(s.truncated);
    }

    #[test]
    fn a_status_reads_as_one_flat_object() {
        let status = EventStatus {
            id: "01J".into(),
            event: Some(EventInfo {
                source: "s".into(),
                event_type: "t".into(),
                event_id: None,
                received_at: "r".into(),
            }),
            state: EventState::Retrying {
                attempt: 2,
                next_attempt_at: "n".into(),
            },
            replays: 0,
            pipelines: vec![],
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["state"], "retrying");
        assert_eq!(v["attempt"], 2);
        assert_eq!(v["source"], "s");
        assert_eq!(v["id"], "01J");
    }
}
