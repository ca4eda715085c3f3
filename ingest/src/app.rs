//! `Application`: builds ingest from settings, binds its listener, and runs until
//! the shutdown token is cancelled.
//!
//! `build` binds first, so tests pass port 0 and read `port()`. Shutdown: readiness
//! turns 503 and requests are still served for `ingest.drain_delay`; then the
//! listener stops accepting, in-flight requests (and their detached publish tasks)
//! finish within `ingest.shutdown_grace`, and the broker connection closes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::dedupe::Dedupe;
use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use hookfleet_common::config::{IngestConfig, Settings};
use hookfleet_common::metrics::IngestMetrics;
use hookfleet_common::publisher::Publisher;
use hookfleet_common::redis::status::Statuses;
use hookfleet_common::redis::{self as hredis, Pool};
use hookfleet_common::topology::Topology;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::routes;
use crate::source::Source;

/// What every request handler shares.
pub struct AppState {
    /// Compiled sources by name.
    pub sources: HashMap<String, Arc<Source>>,
    /// The confirming publisher.
    pub publisher: Publisher,
    /// Event-id claims in Redis.
    pub dedupe: Dedupe,
    /// Event status in Redis (`GET /events/{id}`).
    pub statuses: Statuses,
    /// The Redis pool (readiness).
    pub redis: Pool,
    /// Timeout of one Redis call.
    pub redis_timeout: Duration,
    /// Exchange names.
    pub topology: Topology,
    /// The ingest metrics.
    pub metrics: IngestMetrics,
    /// The `[ingest]` settings.
    pub config: IngestConfig,
    /// Publish tasks detached from their requests; drained at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when shutdown begins.
    pub stopping: CancellationToken,
}

impl AppState {
    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.stopping.is_cancelled()
    }
}

/// The ingest service, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    state: Arc<AppState>,
}

impl Application {
    /// Compiles the sources, binds the listener and declares the topology when the
    /// broker answers (if it does not, ingest starts anyway, unready, and declares
    /// on its first connection).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut sources = HashMap::new();
        for (name, config) in &settings.ingest.sources {
            let source = Source::build(name, config)
                .with_context(|| format!("invalid configuration: `ingest.sources.{name}`"))?;
            sources.insert(name.clone(), Arc::new(source));
        }
        let topology = Topology::new(&settings.namespace, &settings.amqp);
        let publisher = Publisher::new(&settings.amqp, "hookfleet-ingest", Some(topology.clone()));
        if let Err(e) = publisher.connect().await {
            tracing::warn!(error = %hookfleet_common::telemetry::error_chain(&e), "RabbitMQ unavailable at start; will keep trying.");
        }
        let redis = hredis::pool(&settings.redis).context("cannot set up the Redis pool")?;
        let dedupe = Dedupe::new(
            redis.clone(),
            topology.clone(),
            settings.ingest.dedup_ttl,
            settings.redis.timeout,
        );
        let statuses = Statuses::new(
            redis.clone(),
            topology.clone(),
            settings.status.clone(),
            settings.redis.timeout,
        );
        let listener = TcpListener::bind(settings.ingest.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.ingest.listen))?;
        let state = Arc::new(AppState {
            sources,
            publisher,
            dedupe,
            statuses,
            redis,
            redis_timeout: settings.redis.timeout,
            topology,
            metrics: IngestMetrics::new().context("cannot register metrics")?,
            config: settings.ingest.clone(),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
        });
        Ok(Self { listener, state })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The metrics registry, for tests.
    pub fn metrics(&self) -> IngestMetrics {
        self.state.metrics.clone()
    }

    /// The router, without a listener.
    fn router(state: Arc<AppState>) -> Router {
        Router::new()
            .route("/hooks/{source}", post(routes::hooks::receive))
            .route("/events/{id}", get(routes::events::by_id))
            .route(
                "/events/{source}/{event_id}",
                get(routes::events::by_event_id),
            )
            .route("/healthz", get(routes::health::healthz))
            .route("/readyz", get(routes::health::readyz))
            .route("/metrics", get(routes::health::metrics))
            .with_state(state)
    }

    /// Serves until `shutdown` is cancelled, then drains and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = self.state.clone();
        let grace = state.config.shutdown_grace;
        let app = Self::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let draining = CancellationToken::new();
        let stop_accepting = draining.clone();
        let stopping = state.stopping.clone();
        let drain_delay = state.config.drain_delay;
        let signal = async move {
            shutdown.cancelled().await;
            // Readiness turns 503 first; requests are still served while the load
            // balancer notices, then the listener closes.
            stopping.cancel();
            tokio::time::sleep(drain_delay).await;
            stop_accepting.cancel();
        };
        tracing::info!(port = self.port(), "Ingest listening.");
        let server = axum::serve(self.listener, app).with_graceful_shutdown(signal);
        let server = tokio::spawn(async move { server.await });
        draining.cancelled().await;
        // In-flight requests get the grace period; past it they are abandoned
        // (their senders see a reset and retry; nothing unconfirmed was answered 2xx).
        let drained = tokio::time::timeout(grace, async {
            let served = server.await;
            state.tasks.close();
            state.tasks.wait().await;
            served
        })
        .await;
        state.publisher.close().await;
        match drained {
            Ok(Ok(Ok(()))) => {
                tracing::info!("Ingest stopped.");
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(e).context("HTTP server failed"),
            Ok(Err(e)) => Err(e).context("HTTP server task failed"),
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "Shutdown grace period ended with requests in flight."
                );
                Ok(())
            }
        }
    }
}
