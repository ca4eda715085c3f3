//! Awaiting with a deadline: tests wait for a condition, never sleep-then-assert.

use std::future::Future;
use std::time::Duration;

/// Polls `condition` every 20 ms until it holds; panics after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `probe` every 20 ms until it returns a value, and returns it; panics
/// after `deadline`, naming `what` was awaited.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
