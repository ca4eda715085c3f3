//! Deduplication of inbound events: by the provider's event id and, for schemes
//! that sign no timestamp, by the SHA-256 of the body.
//!
//! A claim has two lives. Before the publish, every key of the event is set
//! *pending* (`pending:{message_id}`) with a short TTL, a little over the longest a
//! publish can take: a copy arriving meanwhile is told to come back later (never a
//! 2xx, since the first copy may still fail), and a claim whose process died
//! (`kill -9`) expires within seconds. Only after the broker's confirm do the keys
//! become the full record (`{message_id}` for `dedup_ttl`) that makes later copies
//! duplicates.
//!
//! The claim is held by a [`ClaimGuard`]: confirming it writes the full record;
//! dropping it unconfirmed — an error, an early return, a panic — releases the keys,
//! so the sender's retry is accepted instead of mistaken for a duplicate. Release
//! and confirm touch a key only while it still holds *our* pending value (Lua
//! compare-and-set), so a slow failure never undoes another request's claim.
//!
//! All keys of one event are claimed in one script, atomically: either all are
//! ours or the first existing one answers. (One script over several keys: under
//! Redis Cluster the keys would need a common hash slot; hookfleet uses one node.)

use std::fmt;
use std::time::Duration;

use hookfleet_common::redis::Pool;
use sha2::{Digest, Sha256};

use hookfleet_common::redis::chain::{Call, Chain, ChainScript, Step};
use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::status;
use hookfleet_common::redis::status::{Statuses, Update};
use hookfleet_common::redis::{RedisError, redis};
use hookfleet_common::topology::Topology;

/// What a pending claim's value starts with; message ids (ULIDs) never contain `:`.
const PENDING: &str = "pending:";

/// Returns the first key that exists (its value), or sets every key pending.
static CLAIM: Step = Step {
    name: "dedupe.claim",
    lua: r"
function(KEYS, ARGV)
for _, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held then return held end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return false
end
",
};

/// Turns our pending keys (or keys whose pending claim expired) into the full record.
static CONFIRM: Step = Step {
    name: "dedupe.confirm",
    lua: r"
function(KEYS, ARGV)
for _, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held == false or held == ARGV[1] then
    redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
  end
end
return 1
end
",
};

/// Deletes the keys that still hold our pending value.
static RELEASE: Step = Step {
    name: "dedupe.release",
    lua: r"
function(KEYS, ARGV)
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
  end
end
return 1
end
",
};

/// The outcome of claiming an event.
pub enum Claim {
    /// First sighting: the keys are pending and ours until the guard settles them.
    New(Box<ClaimGuard>),
    /// Another copy is being published right now; its outcome is not known yet.
    Pending,
    /// Seen and confirmed before; holds the message id the first one was given.
    Duplicate(String),
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::New(guard) => write!(f, "New({})", guard.message_id),
            Self::Pending => f.write_str("Pending"),
            Self::Duplicate(first) => write!(f, "Duplicate({first})"),
        }
    }
}

/// The Redis keys one event is deduplicated under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimKeys {
    keys: Vec<String>,
}

impl ClaimKeys {
    /// True when the event has nothing to deduplicate on.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Claims, confirms and releases events in Redis.
#[derive(Clone)]
pub struct Dedupe {
    /// One multiplexed connection for every request (`shared` module docs).
    redis: SharedConnection,
    topology: Topology,
    /// How long a confirmed event is remembered (`ingest.dedup_ttl`).
    ttl: Duration,
    /// How long an unconfirmed claim lives (a little over the longest publish).
    pending_ttl: Duration,
    timeout: Duration,
    /// The claim's steps and the status write, so the confirm and the
    /// `accepted` status go in one round trip.
    script: ChainScript,
}

impl Dedupe {
    /// Remembers confirmed events for `ttl` and pending claims for `pending_ttl`;
    /// each call gives up after `timeout`.
    pub fn new(
        pool: Pool,
        topology: Topology,
        ttl: Duration,
        pending_ttl: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            redis: SharedConnection::new(pool),
            topology,
            ttl,
            pending_ttl,
            timeout,
            script: ChainScript::new(&[&CLAIM, &CONFIRM, &RELEASE, &status::RECORD]),
        }
    }

    fn id_key(&self, source: &str, event_id: &str) -> String {
        self.topology.redis_key(&["seen", source, event_id])
    }

    /// The keys of an event of `source`: its id, if it has one, and the SHA-256 of
    /// its body when `body` is given (namespaced by source).
    pub fn keys(&self, source: &str, event_id: Option<&str>, body: Option<&[u8]>) -> ClaimKeys {
        let mut keys = Vec::with_capacity(2);
        if let Some(id) = event_id {
            keys.push(self.id_key(source, id));
        }
        if let Some(body) = body {
            let digest = hex::encode(Sha256::digest(body));
            keys.push(self.topology.redis_key(&["seen-body", source, &digest]));
        }
        ClaimKeys { keys }
    }

    /// Claims `keys` for `message_id`, pending until the guard is confirmed.
    /// One key (the usual case) is one plain `SET … NX GET`, which answers
    /// what the key held and sets it only if it held nothing — the script's
    /// work without a script's cost; several keys need the script, to claim
    /// all or none.
    pub async fn claim(&self, keys: &ClaimKeys, message_id: &str) -> Result<Claim, RedisError> {
        let pending = pending_value(message_id);
        let held: Option<String> = if let [key] = keys.keys.as_slice() {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key)
                .arg(&pending)
                .arg("NX")
                .arg("PX")
                .arg(millis(self.pending_ttl))
                .arg("GET");
            self.redis.query(self.timeout, &cmd).await?
        } else {
            let call = Call::new(&CLAIM)
                .key_all(&keys.keys)
                .arg(pending)
                .arg(millis(self.pending_ttl));
            self.run_one(call).await?
        };
        Ok(match held {
            None => Claim::New(Box::new(ClaimGuard {
                dedupe: self.clone(),
                keys: keys.clone(),
                message_id: message_id.to_owned(),
                armed: true,
            })),
            Some(value) if value.starts_with(PENDING) => Claim::Pending,
            Some(first) => Claim::Duplicate(first),
        })
    }

    /// The message id `event_id` of `source` was accepted under, while its
    /// record lasts (`ingest.dedup_ttl`). `None` while it is only pending.
    pub async fn lookup(&self, source: &str, event_id: &str) -> Result<Option<String>, RedisError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.id_key(source, event_id));
        let held: Option<String> = self.redis.query(self.timeout, &cmd).await?;
        Ok(held.filter(|value| !value.starts_with(PENDING)))
    }

    /// A published event's last Redis work in one round trip: `guard`'s
    /// confirm, when there is a claim, and `update` (the `accepted` status),
    /// when statuses are on. With one dedup key (or none) it is a `MULTI`
    /// of plain commands — the record `SET` over our pending claim, which
    /// nobody else can hold while it lives, and the status as its first write
    /// ([`Statuses::first_write`]); two keys need the scripts. Nothing to send
    /// is `Ok` at once.
    pub async fn accept(
        &self,
        mut guard: Option<Box<ClaimGuard>>,
        statuses: &Statuses,
        update: &Update<'_>,
    ) -> Result<(), RedisError> {
        if let Some(guard) = guard.as_mut() {
            guard.armed = false;
        }
        let one_key = guard.as_ref().is_none_or(|g| g.keys.keys.len() == 1);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if one_key && (!statuses.enabled() || statuses.first_write(update, &mut pipe)) {
            if let Some(guard) = &guard {
                pipe.cmd("SET")
                    .arg(&guard.keys.keys[0])
                    .arg(&guard.message_id)
                    .arg("PX")
                    .arg(millis(self.ttl))
                    .ignore();
            } else if !statuses.enabled() {
                return Ok(());
            }
            return self.redis.query_pipeline(self.timeout, &pipe).await;
        }
        let mut chain = Chain::new();
        if let Some(guard) = &guard {
            chain.push(self.confirm_call(&guard.keys, &guard.message_id));
        }
        if let Some(status) = statuses.record_call(update) {
            chain.push(status);
        }
        if chain.is_empty() {
            return Ok(());
        }
        self.redis
            .run_chain(self.timeout, &self.script, &chain)
            .await
            .map(drop)
    }

    fn confirm_call(&self, keys: &ClaimKeys, message_id: &str) -> Call {
        Call::new(&CONFIRM)
            .key_all(&keys.keys)
            .arg(pending_value(message_id))
            .arg(message_id)
            .arg(millis(self.ttl))
    }

    async fn confirm(&self, keys: &ClaimKeys, message_id: &str) -> Result<(), RedisError> {
        self.run_one::<i64>(self.confirm_call(keys, message_id))
            .await
            .map(drop)
    }

    async fn release(&self, keys: &ClaimKeys, message_id: &str) -> Result<(), RedisError> {
        let call = Call::new(&RELEASE)
            .key_all(&keys.keys)
            .arg(pending_value(message_id));
        self.run_one::<i64>(call).await.map(drop)
    }

    async fn run_one<T: redis::FromRedisValue>(&self, call: Call) -> Result<T, RedisError> {
        self.redis.run_call(self.timeout, &self.script, call).await
    }
}

/// A pending claim. [`confirm`](Self::confirm) it once the broker confirmed the
/// publish; any other end (error, early return, panic) releases it on drop.
#[must_use = "dropping the guard releases the claim"]
pub struct ClaimGuard {
    dedupe: Dedupe,
    keys: ClaimKeys,
    message_id: String,
    /// False once confirmed or released explicitly.
    armed: bool,
}

impl ClaimGuard {
    /// Makes the claim the full-length record: later copies are duplicates.
    pub async fn confirm(mut self) -> Result<(), RedisError> {
        self.armed = false;
        self.dedupe.confirm(&self.keys, &self.message_id).await
    }

    /// Releases the claim now and reports whether Redis took it; dropping the
    /// guard does the same in the background.
    pub async fn release(mut self) -> Result<(), RedisError> {
        self.armed = false;
        self.dedupe.release(&self.keys, &self.message_id).await
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Drop cannot await: the release runs as its own task. Without a runtime
        // (never the case in the services) the pending TTL expires the claim.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (dedupe, keys) = (self.dedupe.clone(), std::mem::take(&mut self.keys));
        let message_id = std::mem::take(&mut self.message_id);
        runtime.spawn(async move {
            if let Err(e) = dedupe.release(&keys, &message_id).await {
                tracing::warn!(message_id, error = %hookfleet_common::telemetry::error_chain(&e), "Cannot release an unconfirmed dedup claim; it expires with its pending TTL.");
            }
        });
    }
}

fn pending_value(message_id: &str) -> String {
    format!("{PENDING}{message_id}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
