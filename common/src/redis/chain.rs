//! Several scripted steps in one round trip: what keeps a job's Redis work to
//! one call before the AI and one after it, and an ingest request's to one
//! before the publish and one after it.
//!
//! A [`Step`] is a Lua function `function(KEYS, ARGV) … end` over its own keys
//! and arguments, returning its reply and, when the steps after it must not
//! run, a second value `true` (a lease another run holds stops the cache lookup
//! and the limiter booking behind it). A [`ChainScript`] is one script holding
//! every step a service uses plus a small driver; a [`Chain`] lists the calls
//! of one round trip. The driver runs them in order, each over its slice of
//! `KEYS` and `ARGV`, and answers one reply per step that ran — atomically, as
//! any script.
//!
//! The script is sent by its SHA-1 (`EVALSHA`, the redis crate's `Script`); on
//! `NOSCRIPT` (a restarted or flushed Redis) it is loaded and sent again. One
//! script per service, so Redis caches one text however the steps are combined.
//!
//! One script touches keys of several kinds (a lease, a cache entry, a
//! limiter bucket), so a chain needs every key on one Redis node: hookfleet
//! runs on one Redis (docs/operations.md), not Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use super::shared::SharedConnection;
use super::{RedisError, redis};

/// One scripted operation (module docs).
#[derive(Debug)]
pub struct Step {
    /// Its name in the chain script; unique within a service.
    pub name: &'static str,
    /// `function(KEYS, ARGV) … end`, returning a reply (never `nil`) and
    /// optionally `true` to stop the chain.
    pub lua: &'static str,
}

/// Runs the calls of a [`Chain`] in order, each over its slice of KEYS/ARGV.
/// ARGV: the number of calls n, then (name, keys, args) per call, then every
/// call's arguments.
const DRIVER: &str = r"
local n = tonumber(ARGV[1])
local out = {}
local ki, ai = 1, 2 + 3 * n
for s = 1, n do
  local base = 2 + 3 * (s - 1)
  local step = steps[ARGV[base]]
  if not step then return redis.error_reply('unknown step ' .. ARGV[base]) end
  local keys, argv = {}, {}
  for i = 1, tonumber(ARGV[base + 1]) do keys[i] = KEYS[ki]; ki = ki + 1 end
  for i = 1, tonumber(ARGV[base + 2]) do argv[i] = ARGV[ai]; ai = ai + 1 end
  local reply, stop = step(keys, argv)
  if reply == nil then reply = false end
  out[s] = reply
  if stop then break end
end
return out
";

/// The script that runs a service's chains. Cheap to clone.
#[derive(Clone)]
pub struct ChainScript {
    script: Arc<redis::Script>,
}

impl std::fmt::Debug for ChainScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainScript")
            .field("sha", &self.script.get_hash())
            .finish()
    }
}

impl ChainScript {
    /// One script holding `steps`. Does no I/O (it is loaded on first use).
    pub fn new(steps: &[&Step]) -> Self {
        let mut code = String::from("local steps = {}\n");
        for step in steps {
            code.push_str("steps['");
            code.push_str(step.name);
            code.push_str("'] = ");
            code.push_str(step.lua.trim());
            code.push('\n');
        }
        code.push_str(DRIVER);
        Self {
            script: Arc::new(redis::Script::new(&code)),
        }
    }

    /// The script's SHA-1, as `EVALSHA` sends it.
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }
}

/// One call of a step: its keys and arguments.
#[derive(Debug)]
pub struct Call {
    step: &'static Step,
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// A call of `step` with no keys or arguments yet.
    pub fn new(step: &'static Step) -> Self {
        Self {
            step,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// Adds a key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
        self
    }

    /// Adds every key of `keys`.
    pub fn key_all(mut self, keys: &[String]) -> Self {
        self.keys.extend(keys.iter().cloned());
        self
    }

    /// Adds an argument (several, for a value that encodes as several).
    pub fn arg(mut self, arg: impl redis::ToRedisArgs) -> Self {
        self.args.extend(arg.to_redis_args());
        self
    }
}

/// The calls of one round trip (module docs).
#[derive(Debug, Default)]
pub struct Chain {
    calls: Vec<Call>,
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `call`; returns its index in the [`ChainReply`].
    pub fn push(&mut self, call: Call) -> usize {
        self.calls.push(call);
        self.calls.len() - 1
    }

    /// How many calls it holds.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    fn invocation<'a>(&self, script: &'a ChainScript) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.script.prepare_invoke();
        invocation.arg(self.calls.len());
        for call in &self.calls {
            invocation
                .arg(call.step.name)
                .arg(call.keys.len())
                .arg(call.args.len());
        }
        for call in &self.calls {
            for key in &call.keys {
                invocation.key(key);
            }
            for arg in &call.args {
                invocation.arg(arg.as_slice());
            }
        }
        invocation
    }
}

/// One reply per call that ran; calls after a stop have none.
#[derive(Debug)]
pub struct ChainReply {
    replies: Vec<redis::Value>,
}

impl ChainReply {
    /// How many calls ran.
    pub fn ran(&self) -> usize {
        self.replies.len()
    }

    /// The reply of call `index`, `None` if it did not run.
    pub fn get<T: redis::FromRedisValue>(&self, index: usize) -> Result<Option<T>, RedisError> {
        match self.replies.get(index) {
            None => Ok(None),
            Some(value) => T::from_redis_value_ref(value)
                .map(Some)
                .map_err(|e| RedisError::Command(e.into())),
        }
    }
}

impl ChainReply {
    /// The reply of call `index`; a call that did not run reads as nil.
    pub fn reply<T: redis::FromRedisValue>(&self, index: usize) -> Result<T, RedisError> {
        let value = self.replies.get(index).unwrap_or(&redis::Value::Nil);
        T::from_redis_value_ref(value).map_err(|e| RedisError::Command(e.into()))
    }
}

impl SharedConnection {
    /// Runs one call as a chain of its own: one `EVALSHA`, its reply.
    pub async fn run_call<T: redis::FromRedisValue>(
        &self,
        timeout: Duration,
        script: &ChainScript,
        call: Call,
    ) -> Result<T, RedisError> {
        let mut chain = Chain::new();
        let at = chain.push(call);
        self.run_chain(timeout, script, &chain).await?.reply(at)
    }

    /// Runs `chain` as one `EVALSHA` of `script` within `timeout`.
    pub async fn run_chain(
        &self,
        timeout: Duration,
        script: &ChainScript,
        chain: &Chain,
    ) -> Result<ChainReply, RedisError> {
        let invocation = chain.invocation(script);
        let replies: Vec<redis::Value> = self.invoke(timeout, &invocation).await?;
        Ok(ChainReply { replies })
    }
}
