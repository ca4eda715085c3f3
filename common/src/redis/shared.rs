//! One multiplexed Redis connection shared by every task of a service, for the
//! commands on the hot path (ingest's dedup claim, the worker's effect markers,
//! the limiter's and the cache's scripts).
//!
//! A `MultiplexedConnection` is made for concurrent use: commands from many tasks
//! are written back to back on one socket and the answers are matched in order,
//! so concurrent requests share their writes and reads. Taking a connection from
//! the pool for every command costs more than the command: deadpool-redis checks
//! every connection it hands out with `UNWATCH` + `PING`, a second round trip per
//! command, and each command then pays its own write and read. Measured with
//! `target/release/bench ingest` and `bench worker`, builds before and after, on
//! two cores: ingest's and the worker's CPU per request fell by about a third,
//! Redis's by half (bench/NOTES.md).
//!
//! The connection is taken out of the pool once (`Connection::take`) and cloned
//! for each command. When a command fails in a way that means the connection is
//! broken (I/O error, dropped, or no answer within the timeout), it is discarded
//! and the next command takes a fresh one from the pool; server errors (a script
//! error, a wrong type) leave it in place. Every call is bounded by the timeout,
//! including taking a connection, as everywhere in this module.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::{Connection, Pool};

use super::{RedisError, redis};

/// A cheap-to-clone handle on the shared connection. See the module docs.
#[derive(Clone)]
pub struct SharedConnection {
    /// Where a fresh connection comes from.
    pool: Pool,
    /// The connection in use and its generation; `None` before the first command
    /// and after a failure. A std mutex: held only to clone or replace the
    /// handle, never across an await.
    current: Arc<Mutex<Current>>,
}

#[derive(Default)]
struct Current {
    /// Bumped whenever a connection is taken, so a failing command discards only
    /// the connection it used, not a newer one another task already took.
    generation: u64,
    connection: Option<MultiplexedConnection>,
}

impl SharedConnection {
    /// A handle taking its connection from `pool` on first use. Does no I/O.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            current: Arc::new(Mutex::new(Current::default())),
        }
    }

    /// Runs one command within `timeout`.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        timeout: Duration,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisError> {
        let work = async {
            let (generation, mut conn) = self.connection().await?;
            let answer = cmd.query_async(&mut conn).await;
            Ok((generation, answer))
        };
        self.settle(timeout, work).await
    }

    /// Runs a pipeline within `timeout`.
    pub async fn query_pipeline<T: redis::FromRedisValue>(
        &self,
        timeout: Duration,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        let work = async {
            let (generation, mut conn) = self.connection().await?;
            let answer = pipe.query_async(&mut conn).await;
            Ok((generation, answer))
        };
        self.settle(timeout, work).await
    }

    /// Runs a script by its SHA-1 (loading it on `NOSCRIPT`) within `timeout`.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        timeout: Duration,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let work = async {
            let (generation, mut conn) = self.connection().await?;
            let answer = invocation.invoke_async(&mut conn).await;
            Ok((generation, answer))
        };
        self.settle(timeout, work).await
    }

    /// Bounds `work` by `timeout`; discards the connection it used if the error
    /// says the connection is broken, or if it did not answer in time.
    async fn settle<T>(
        &self,
        timeout: Duration,
        work: impl Future<Output = Result<(u64, redis::RedisResult<T>), RedisError>>,
    ) -> Result<T, RedisError> {
        let (generation, answer) = match tokio::time::timeout(timeout, work).await {
            Ok(taken) => taken?,
            Err(_) => {
                // A connection that does not answer may be half-dead: start afresh.
                self.lock().connection = None;
                return Err(RedisError::Timeout);
            }
        };
        answer.map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                let mut current = self.lock();
                if current.generation == generation {
                    current.connection = None;
                }
            }
            RedisError::Command(e)
        })
    }

    /// The shared connection and its generation, taking one from the pool when
    /// there is none. Tasks racing on the first command may each take one; the
    /// last one stays, the others close once their command is done.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        {
            let current = self.lock();
            if let Some(conn) = &current.connection {
                return Ok((current.generation, conn.clone()));
            }
        }
        let conn = Connection::take(self.pool.get().await?);
        let mut current = self.lock();
        current.generation += 1;
        current.connection = Some(conn.clone());
        Ok((current.generation, conn))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
