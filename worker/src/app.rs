//! `Application`: builds a worker from settings, binds its admin listener, and
//! runs until the shutdown token is cancelled.
//!
//! `build` compiles every pipeline (a bad glob or template fails here, with its
//! field), builds the providers' HTTP clients and binds the admin port (port 0
//! works in tests) — but never requires the broker: a worker started while
//! RabbitMQ is away keeps trying and reports unready until it consumes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Settings, WorkerConfig};
use crate::limits::cache::Cache;
use crate::limits::limiter::Limiter;
use crate::limits::markers::Markers;
use crate::metrics::WorkerMetrics;
use anyhow::Context;
use hookfleet_common::broker::Broker;
use hookfleet_common::publisher::Publisher;
use hookfleet_common::redis::status::Statuses;
use hookfleet_common::redis::{self as hredis};
use hookfleet_common::telemetry::error_chain;
use hookfleet_common::topology::Topology;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::auth::TokenStore;
use crate::delivery::consumer::{Consumer, ConsumerConfig, Readiness};
use crate::delivery::job::JobContext;
use crate::delivery::outcome::RetryPolicy;
use crate::heartbeat::{Fleet, Heartbeat};
use crate::pipeline::Pipelines;
use crate::pipeline::sinks::Sink;
use crate::providers::Provider;

/// A worker, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    consumer: Consumer,
    publisher: Publisher,
    metrics: WorkerMetrics,
    readiness: Readiness,
    owner: String,
    /// The web console, when `worker.console.enabled`.
    console: Option<crate::console::Console>,
    /// This worker's heartbeat in Redis, which the console sums over the fleet.
    heartbeat: Heartbeat,
}

impl Application {
    /// Compiles the pipelines, builds the providers, binds the admin listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let config = &settings.worker;
        let owner = format!("hookfleet-worker-{}", ulid::Ulid::new());
        let topology = Topology::new(&settings.namespace, &settings.amqp);
        let metrics = WorkerMetrics::new().context("cannot register metrics")?;
        // One Broker per connection: each goes round the nodes on its own.
        let broker = || Broker::counted(&settings.amqp, metrics.amqp_connections.clone());
        let publisher = Publisher::counted(
            broker(),
            &format!("{owner}-publisher"),
            Some(topology.clone()),
            metrics.amqp_channels_reopened.clone(),
        );
        let tokens = TokenStore::new(
            hredis::pool(&settings.redis).context("cannot set up the Redis pool")?,
            topology.clone(),
            settings.redis.timeout,
            metrics.clone(),
        );
        let pipelines = build_pipelines(config, &publisher, &topology, &tokens)?;
        warn_if_grace_is_short(config);
        let ctx = job_context(&settings, pipelines, &topology, &metrics, &owner)?;
        let console = crate::console::Console::build(crate::console::ConsoleParts {
            redis: hredis::pool(&settings.redis).context("cannot set up the Redis pool")?,
            settings: settings.clone(),
            metrics: metrics.clone(),
            worker: owner.clone(),
        })
        .context("cannot build the web console")?;
        let consumer = Consumer::new(
            Arc::new(ctx),
            publisher.clone(),
            topology,
            ConsumerConfig {
                amqp: settings.amqp.clone(),
                broker: broker(),
                concurrency: config.concurrency,
                shutdown_grace: config.shutdown_grace,
                requeue_delay: config.requeue_delay,
                reconnect_min_delay: config.reconnect_min_delay,
                reconnect_max_delay: config.reconnect_max_delay,
                name: owner.clone(),
            },
        );
        let heartbeat = heartbeat(&settings, &metrics, &owner)?;
        let listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.admin_listen))?;
        Ok(Self {
            listener,
            readiness: consumer.readiness(),
            consumer,
            publisher,
            metrics,
            owner,
            console,
            heartbeat,
        })
    }

    /// The admin server's bound port (useful with port 0).
    pub fn admin_port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The worker's metrics.
    pub fn metrics(&self) -> WorkerMetrics {
        self.metrics.clone()
    }

    /// Whether the worker is consuming (what `/readyz` reports).
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// This instance's name: its connection name, consumer tag and lease owner.
    pub fn name(&self) -> &str {
        &self.owner
    }

    /// Consumes until `shutdown` is cancelled, then stops consuming, lets
    /// in-flight jobs finish within `worker.shutdown_grace`, and closes.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = Arc::new(AdminState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
            stopping: shutdown.clone(),
        });
        let admin_stop = CancellationToken::new();
        let admin_stopped = admin_stop.clone();
        tracing::info!(port = self.admin_port(), name = %self.owner, "Worker admin server listening.");
        let mut router = admin::router(state);
        if let Some(console) = self.console {
            router = router.nest("/console", console.router(shutdown.clone()));
        }
        let admin = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { admin_stopped.cancelled().await });
        let admin = tokio::spawn(async move { admin.await });
        // Beats until the consumer has drained, so the fleet view counts the drain.
        let beat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(self.heartbeat.run_until_stopped(beat_stop.clone()));
        if let Err(e) = self.publisher.connect().await {
            tracing::warn!(error = %error_chain(&e), "RabbitMQ unavailable at start; will keep trying.");
        }
        self.consumer.run_until_stopped(shutdown).await;
        beat_stop.cancel();
        let _ = heartbeat.await;
        self.publisher.close().await;
        // The admin server outlives the consumer, so /readyz reports the drain.
        admin_stop.cancel();
        match admin.await {
            Ok(Ok(())) => {
                tracing::info!("Worker stopped.");
                Ok(())
            }
            Ok(Err(e)) => Err(e).context("admin server failed"),
            Err(e) => Err(e).context("admin server task failed"),
        }
    }
}

/// Builds the providers' clients and compiles every pipeline with its sinks; a
/// bad glob, template or sink fails here, naming its field.
fn build_pipelines(
    config: &WorkerConfig,
    publisher: &Publisher,
    topology: &Topology,
    tokens: &TokenStore,
) -> anyhow::Result<Pipelines> {
    let mut providers = HashMap::new();
    for (name, provider) in &config.providers {
        let built = Provider::build(name, provider, tokens)
            .with_context(|| format!("cannot build provider `worker.providers.{name}`"))?;
        providers.insert(name.clone(), Arc::new(built));
    }
    let pipelines = Pipelines::build(config, &providers, tokens, |i, p| {
        p.sinks
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let field = format!("worker.pipelines[{i}].sinks[{j}]");
                Sink::build(
                    &field,
                    s,
                    p.undefined,
                    &config.outbound,
                    tokens,
                    publisher,
                    topology,
                )
            })
            .collect()
    })?;
    if pipelines.is_empty() {
        tracing::warn!("No pipelines configured: every event is unmatched.");
    }
    Ok(pipelines)
}

/// A scale-down abandons jobs longer than the grace; their AI calls are paid again.
fn warn_if_grace_is_short(config: &WorkerConfig) {
    let longest_job = config.longest_job();
    if config.shutdown_grace < longest_job {
        tracing::warn!(
            shutdown_grace = ?config.shutdown_grace,
            ?longest_job,
            "worker.shutdown_grace is shorter than the longest job: a scale-down abandons such jobs and their AI calls are paid again."
        );
    }
}

/// This worker's heartbeat, beating once `run_until_stopped` starts.
fn heartbeat(
    settings: &Settings,
    metrics: &WorkerMetrics,
    owner: &str,
) -> anyhow::Result<Heartbeat> {
    Ok(Heartbeat {
        fleet: Fleet::new(
            hredis::pool(&settings.redis).context("cannot set up the Redis pool")?,
            Topology::new(&settings.namespace, &settings.amqp),
            settings.redis.timeout,
        ),
        worker: owner.to_owned(),
        prefetch: settings.worker.concurrency,
        in_flight: metrics.inflight.clone(),
        failures: metrics.heartbeat_failures.clone(),
        interval: settings.worker.heartbeat_interval,
    })
}

/// What every job shares: the pipelines and the Redis-backed limiter, cache,
/// markers and event status.
fn job_context(
    settings: &Settings,
    pipelines: Pipelines,
    topology: &Topology,
    metrics: &WorkerMetrics,
    owner: &str,
) -> anyhow::Result<JobContext> {
    let config = &settings.worker;
    let redis = hredis::pool(&settings.redis).context("cannot set up the Redis pool")?;
    let timeout = settings.redis.timeout;
    Ok(JobContext {
        pipelines,
        markers: Markers::new(redis.clone(), topology.clone(), timeout),
        limiter: Limiter::new(redis.clone(), topology.clone(), &config.limits, timeout),
        cache: Cache::new(redis.clone(), topology.clone(), timeout),
        policy: RetryPolicy::new(config.max_attempts, topology.retry_tiers())
            .with_max_retry_after(config.limits.max_retry_after),
        unmatched: config.unmatched,
        metrics: metrics.clone(),
        owner: owner.to_owned(),
        lease_ttl: config.lease_ttl,
        done_ttl: config.done_ttl,
        statuses: Statuses::new(redis, topology.clone(), settings.status.clone(), timeout),
    })
}
