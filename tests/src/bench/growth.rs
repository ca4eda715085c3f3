//! How cost grows (issue 15): the suite's measurements swept along one axis at a
//! time, so a deployment can be sized from the tables rather than from one point.
//!
//! - **Fleet**: 1, 2, 4 worker processes (each with the suite's prefetch) draining
//!   one backlog through one broker, mock-ai at 0 ms — what a process more costs.
//! - **Depth**: ingest at 16, 64, 256 connections, each beside the publish ceiling
//!   with as many publishes in flight.
//! - **Size**: 1 KiB, 16 KiB, 256 KiB bodies: ingest beside the publish ceiling
//!   and the worker beside the consume-publish-ack ceiling, at that size.
//!
//! Each point runs in rounds like the suite's, a ceiling right before the service
//! it bounds, and every ratio is taken within a round. Message counts shrink as
//! messages grow ([`GrowthParams::messages_at`]) so a 256 KiB run moves about as
//! many bytes as a 16 KiB one rather than sixteen times as many.

use std::time::Duration;

use serde::Serialize;

use super::broker::{PublishParams, Throughput};
use super::ingest::{self, IngestParams, IngestRun};
use super::procs::Lab;
use super::suite;
use super::worker::{self, WorkerParams, WorkerRun};

/// What the sweeps run.
#[derive(Debug, Clone)]
pub struct GrowthParams {
    /// Rounds (0: no sweep at all).
    pub runs: usize,
    /// Worker processes of the fleet sweep.
    pub fleet: Vec<u16>,
    /// `worker.concurrency` of every worker run (and the consume ceilings' prefetch).
    pub concurrency: u16,
    /// Connections (and publishes in flight) of the depth sweep.
    pub depths: Vec<usize>,
    /// Body sizes of the size sweep, bytes.
    pub sizes: Vec<usize>,
    /// Length of each ingest run.
    pub ingest_duration: Duration,
    /// Messages of a ceiling or worker run at 1 KiB; fewer for larger bodies.
    pub messages: u64,
    /// At most this many bytes of bodies per ceiling or worker run.
    pub bytes_per_run: u64,
}

impl GrowthParams {
    /// What `make bench` runs with `runs` rounds (about 2½ minutes a round on two cores).
    pub fn standard(runs: usize) -> Self {
        Self {
            runs,
            fleet: vec![1, 2, 4],
            concurrency: 64,
            depths: vec![16, 64, 256],
            sizes: vec![1024, 16 * 1024, 256 * 1024],
            ingest_duration: Duration::from_secs(5),
            messages: 10_000,
            bytes_per_run: 128 * 1024 * 1024,
        }
    }

    /// Every point once, tiny: checks the tooling, measures nothing.
    pub fn smoke() -> Self {
        Self {
            runs: 1,
            fleet: vec![1, 2],
            concurrency: 16,
            depths: vec![4, 16],
            ingest_duration: Duration::from_millis(300),
            messages: 150,
            bytes_per_run: 8 * 1024 * 1024,
            ..Self::standard(1)
        }
    }

    /// Messages of a ceiling or worker run with `bytes`-byte bodies: `messages`,
    /// cut to `bytes_per_run`, but at least two prefetch windows.
    pub fn messages_at(&self, bytes: usize) -> u64 {
        let budget = self.bytes_per_run / bytes.max(1) as u64;
        self.messages
            .min(budget)
            .max(2 * u64::from(self.concurrency))
    }

    /// A publish ceiling run of either sweep.
    pub fn publish(&self, in_flight: usize, bytes: usize) -> PublishParams {
        PublishParams {
            messages: self.messages_at(bytes),
            in_flight,
            channels: 1,
            body_bytes: bytes,
        }
    }

    /// An ingest run of either sweep.
    pub fn ingest(&self, concurrency: usize, bytes: usize) -> IngestParams {
        IngestParams {
            concurrency,
            duration: self.ingest_duration,
            body_bytes: bytes,
        }
    }

    /// A worker run of either sweep, mock-ai at 0 ms.
    pub fn worker(&self, processes: u16, bytes: usize) -> WorkerParams {
        WorkerParams {
            jobs: self.messages_at(bytes),
            concurrency: self.concurrency,
            latency_ms: 0,
            body_bytes: bytes,
            processes,
        }
    }
}

/// One point of the depth sweep.
#[derive(Debug, Clone, Serialize)]
pub struct DepthPoint {
    /// Connections, and publishes in flight at the ceiling.
    pub depth: usize,
    /// The publish ceiling, one per round.
    pub ceiling: Vec<Throughput>,
    /// Ingest, one per round.
    pub ingest: Vec<IngestRun>,
}

/// One point of the fleet sweep.
#[derive(Debug, Clone, Serialize)]
pub struct FleetPoint {
    /// Worker processes.
    pub processes: u16,
    /// One per round.
    pub runs: Vec<WorkerRun>,
}

/// One point of the size sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SizePoint {
    /// Body size, bytes.
    pub bytes: usize,
    /// The publish ceiling, one per round.
    pub publish: Vec<Throughput>,
    /// Ingest at the suite's connections, one per round.
    pub ingest: Vec<IngestRun>,
    /// The consume-publish-ack ceiling, one per round.
    pub relay: Vec<Throughput>,
    /// The worker at 0 ms, one per round.
    pub worker: Vec<WorkerRun>,
}

/// Everything the sweeps measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Growth {
    /// By worker processes.
    pub fleet: Vec<FleetPoint>,
    /// By connections.
    pub depths: Vec<DepthPoint>,
    /// By body size.
    pub sizes: Vec<SizePoint>,
}

impl Growth {
    /// The depth sweep's point at `depth`, if it ran.
    pub fn depth(&self, depth: usize) -> Option<&DepthPoint> {
        self.depths.iter().find(|p| p.depth == depth)
    }
}

/// Runs the sweeps in rounds, reporting progress on stderr.
pub async fn run(lab: &Lab, params: &GrowthParams) -> anyhow::Result<Growth> {
    let mut growth = Growth {
        fleet: params
            .fleet
            .iter()
            .map(|&processes| FleetPoint {
                processes,
                runs: Vec::new(),
            })
            .collect(),
        depths: params
            .depths
            .iter()
            .map(|&depth| DepthPoint {
                depth,
                ceiling: Vec::new(),
                ingest: Vec::new(),
            })
            .collect(),
        sizes: params
            .sizes
            .iter()
            .map(|&bytes| SizePoint {
                bytes,
                publish: Vec::new(),
                ingest: Vec::new(),
                relay: Vec::new(),
                worker: Vec::new(),
            })
            .collect(),
    };
    for round in 1..=params.runs {
        let tag = format!("[growth {round}/{}]", params.runs);
        for point in &mut growth.fleet {
            fleet_round(lab, params, point, &tag).await?;
        }
        for point in &mut growth.depths {
            depth_round(lab, params, point, &tag).await?;
        }
        for point in &mut growth.sizes {
            size_round(lab, params, point, &tag).await?;
        }
    }
    Ok(growth)
}

async fn fleet_round(
    lab: &Lab,
    params: &GrowthParams,
    point: &mut FleetPoint,
    tag: &str,
) -> anyhow::Result<()> {
    let run = worker::run(lab, &params.worker(point.processes, 1024)).await?;
    eprintln!(
        "{tag} {} worker process(es): {:.0} jobs/s",
        point.processes, run.per_second
    );
    point.runs.push(run);
    Ok(())
}

async fn depth_round(
    lab: &Lab,
    params: &GrowthParams,
    point: &mut DepthPoint,
    tag: &str,
) -> anyhow::Result<()> {
    let ceiling = suite::publish(&params.publish(point.depth, 1024)).await?;
    let run = ingest::run(lab, &params.ingest(point.depth, 1024)).await?;
    eprintln!(
        "{tag} depth {}: ingest {:.0} req/s, publish ceiling {:.0} msg/s",
        point.depth, run.load.rps, ceiling.per_second
    );
    point.ceiling.push(ceiling);
    point.ingest.push(run);
    Ok(())
}

async fn size_round(
    lab: &Lab,
    params: &GrowthParams,
    point: &mut SizePoint,
    tag: &str,
) -> anyhow::Result<()> {
    let depth = usize::from(params.concurrency);
    let publish = params.publish(depth, point.bytes);
    let ceiling = suite::publish(&publish).await?;
    let ingest = ingest::run(lab, &params.ingest(depth, point.bytes)).await?;
    let relay = suite::relay(publish.messages, params.concurrency, &publish).await?;
    let worker = worker::run(lab, &params.worker(1, point.bytes)).await?;
    eprintln!(
        "{tag} {} B: ingest {:.0} req/s (ceiling {:.0}), worker {:.0} jobs/s (ceiling {:.0})",
        point.bytes, ingest.load.rps, ceiling.per_second, worker.per_second, relay.per_second
    );
    point.publish.push(ceiling);
    point.ingest.push(ingest);
    point.relay.push(relay);
    point.worker.push(worker);
    Ok(())
}
