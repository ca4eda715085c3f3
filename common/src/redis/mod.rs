//! Redis: the connection pool, the shared multiplexed connection and the event
//! status, which both services use. Ingest's deduplication and the worker's
//! limiter, cache and effect markers live in their own crates.
//!
//! Every operation is bounded by `redis.timeout`, including waiting for a pooled
//! connection, so a Redis outage turns into a fast error the caller can apply its
//! fail mode to, never a hung request.
//!
//! The hot paths (dedup claims, markers, the limiter, the cache) share one
//! multiplexed connection instead of taking one from the pool per command:
//! [`shared`] explains why.

pub mod chain;
pub mod shared;
pub mod status;

use deadpool_redis::{Config as PoolConfig, PoolConfig as PoolSize, Runtime, Timeouts};

use crate::config::{RedisConfig, redact_url};

pub use deadpool_redis::{Pool, redis};

/// A Redis operation failed or timed out.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The pool could not be built (bad URL).
    #[error("invalid Redis configuration for {url}")]
    Config {
        /// The URL, credentials redacted.
        url: String,
        /// The cause.
        #[source]
        source: deadpool_redis::CreatePoolError,
    },
    /// No connection could be taken from the pool in time.
    #[error("no Redis connection available")]
    Pool(#[from] deadpool_redis::PoolError),
    /// The command failed.
    #[error("Redis command failed")]
    Command(#[from] redis::RedisError),
    /// The command did not answer within `redis.timeout`.
    #[error("Redis command timed out")]
    Timeout,
}

/// Builds the pool. Does no I/O: connections are opened on first use.
pub fn pool(config: &RedisConfig) -> Result<Pool, RedisError> {
    let mut cfg = PoolConfig::from_url(config.url.clone());
    let mut size = PoolSize::new(config.pool_size);
    size.timeouts = Timeouts {
        wait: Some(config.timeout),
        create: Some(config.timeout),
        recycle: Some(config.timeout),
    };
    cfg.pool = Some(size);
    cfg.create_pool(Some(Runtime::Tokio1))
        .map_err(|source| RedisError::Config {
            url: redact_url(&config.url),
            source,
        })
}

/// Runs one command on a pooled connection with a deadline.
pub async fn run<T: redis::FromRedisValue>(
    pool: &Pool,
    timeout: std::time::Duration,
    cmd: &redis::Cmd,
) -> Result<T, RedisError> {
    let work = async {
        let mut conn = pool.get().await?;
        let value: T = cmd.query_async(&mut *conn).await?;
        Ok::<T, RedisError>(value)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| RedisError::Timeout)?
}

/// Whether Redis answers `PING` within the timeout.
pub async fn ping(pool: &Pool, timeout: std::time::Duration) -> bool {
    run::<String>(pool, timeout, &redis::cmd("PING"))
        .await
        .is_ok()
}
