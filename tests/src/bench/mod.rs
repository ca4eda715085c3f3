//! Benchmarks of the real binaries on this machine, written up as `BENCHMARKS.md`
//! by `make bench`.
//!
//! Every figure is measured against a ceiling taken the same way on the same
//! machine — the broker with bare lapin and nothing of hookfleet — and quoted as
//! a ratio, because on a small shared machine absolute rates move from one minute
//! to the next. Every run also checks its accounting (each 202 landed, each job
//! got exactly one result), so a fast but lossy run fails instead of flattering.
//!
//! - [`broker`]: the bare-lapin ceilings: publish with confirms, consume and ack,
//!   consume-publish-ack.
//! - [`procs`]: the services as child processes with a config file, readiness,
//!   peak RSS.
//! - [`cpu`]: each process's and the machine's CPU time over a run.
//! - [`ingest`], [`worker`], [`e2e`]: one run of each scenario, in a fresh
//!   namespace (`TestEnv`), cleaned up afterwards.
//! - [`floor`]: what the required crates alone spend per webhook and per job,
//!   against the same ceilings.
//! - [`growth`]: how cost grows with worker processes, connections and message
//!   size; [`sizing`] writes its tables.
//! - [`limiter`]: the fleet-wide rate limiter's accuracy, judged by mock-ai.
//! - [`suite`]: `bench all`: rounds of every measurement, then end to end.
//! - [`report`]: the Markdown.

pub mod broker;
pub mod cpu;
pub mod e2e;
pub mod floor;
pub mod growth;
pub mod ingest;
pub mod limiter;
pub mod procs;
pub mod report;
pub mod sizing;
pub mod suite;
pub mod worker;

use crate::env::TestEnv;

/// Runs `measure` in a fresh namespace (`TestEnv`) and removes the namespace
/// afterwards, whether the measurement succeeded or not.
pub async fn in_fresh_namespace<T>(
    measure: impl AsyncFnOnce(&TestEnv) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let env = TestEnv::new().await;
    let result = measure(&env).await;
    env.cleanup().await;
    result
}
