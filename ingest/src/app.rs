//! `Application`: builds ingest from settings, binds its listeners, and runs until
//! the shutdown token is cancelled.
//!
//! Two listeners: the public one (`ingest.listen`) serves only `/hooks/*`,
//! `/healthz` and `/readyz`; the admin one (`ingest.admin_listen`) serves
//! `/metrics` and the probes. The status API (`/events/…`) is served on the one
//! `ingest.status_listener` names, behind its bearer token, and nowhere when no
//! token is set. `/hooks/*` requests beyond `ingest.max_in_flight` are shed with
//! 503 and `Retry-After` by tower's `GlobalConcurrencyLimit` and `LoadShed`.
//!
//! `build` binds first, so tests pass port 0 and read `port()`. Shutdown: readiness
//! turns 503 and requests are still served for `ingest.drain_delay`; then the
//! listener stops accepting, in-flight requests (and their detached publish tasks)
//! finish within `ingest.shutdown_grace`, and the broker connection closes.

use crate::events::RequestAnswered;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{IngestConfig, Listener, Settings};
use crate::dedupe::Dedupe;
use crate::metrics::IngestMetrics;
use anyhow::Context;
use axum::error_handling::HandleErrorLayer;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router, middleware};
use hookfleet_common::broker::Broker;
use hookfleet_common::publisher::Publisher;
use hookfleet_common::redis::status::Statuses;
use hookfleet_common::redis::{self as hredis, Pool};
use hookfleet_common::topology::Topology;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::client::{HasProxies, TrustedProxies};
use crate::error::IngestError;
use crate::routes;
use crate::serve::{ConnectionLimits, serve};
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
    /// Whose forwarding headers name the client.
    pub proxies: TrustedProxies,
    /// Publish tasks detached from their requests; drained at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when shutdown begins.
    pub stopping: CancellationToken,
    /// The longest a publish may take (connect, then confirm); a pending dedup
    /// claim lives [`PENDING_MARGIN`] longer.
    pub publish_deadline: Duration,
    /// Test-only: runs inside the publish task after the claim (feature
    /// `test-hooks`; never compiled into a release build of the binary alone).
    #[cfg(feature = "test-hooks")]
    pub before_publish: Option<BeforePublish>,
}

impl HasProxies for AppState {
    fn proxies(&self) -> &TrustedProxies {
        &self.proxies
    }
}

/// How much longer than the publish deadline a pending dedup claim lives, so it
/// never expires under a publish still in flight.
pub const PENDING_MARGIN: Duration = Duration::from_secs(2);

/// A test hook run before each publish.
#[cfg(feature = "test-hooks")]
pub type BeforePublish = Arc<dyn Fn(&hookfleet_common::message::EventMeta) + Send + Sync>;

impl AppState {
    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.stopping.is_cancelled()
    }
}

/// The ingest service, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    admin: TcpListener,
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
        let metrics = IngestMetrics::new().context("cannot register metrics")?;
        let broker = Broker::counted(&settings.amqp, metrics.amqp_connections.clone());
        let publisher = Publisher::counted(
            broker,
            "hookfleet-ingest",
            Some(topology.clone()),
            metrics.amqp_channels_reopened.clone(),
        );
        if let Err(e) = publisher.connect().await {
            tracing::warn!(error = %hookfleet_common::telemetry::error_chain(&e), "RabbitMQ unavailable at start; will keep trying.");
        }
        let redis = hredis::pool(&settings.redis).context("cannot set up the Redis pool")?;
        let publish_deadline = settings.amqp.connect_timeout + settings.amqp.confirm_timeout;
        let dedupe = Dedupe::new(
            redis.clone(),
            topology.clone(),
            settings.ingest.dedup_ttl,
            publish_deadline + PENDING_MARGIN,
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
        let admin = TcpListener::bind(settings.ingest.admin_listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.ingest.admin_listen))?;
        let state = Arc::new(AppState {
            sources,
            publisher,
            dedupe,
            statuses,
            redis,
            redis_timeout: settings.redis.timeout,
            topology,
            metrics,
            config: settings.ingest.clone(),
            proxies: TrustedProxies::new(
                settings.ingest.trusted_networks(),
                settings.ingest.client_ip_header,
            ),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            publish_deadline,
            #[cfg(feature = "test-hooks")]
            before_publish: None,
        });
        Ok(Self {
            listener,
            admin,
            state,
        })
    }

    /// The bound port of the public listener (useful with port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Test-only: runs `hook` inside every publish task, after the claim.
    #[cfg(feature = "test-hooks")]
    pub fn set_before_publish(&mut self, hook: BeforePublish) {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.before_publish = Some(hook);
        }
    }

    /// The bound port of the admin listener.
    pub fn admin_port(&self) -> u16 {
        self.admin.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The metrics registry, for tests.
    pub fn metrics(&self) -> IngestMetrics {
        self.state.metrics.clone()
    }

    /// The public listener's routes.
    fn public_router(state: Arc<AppState>) -> Router {
        let shed = ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overloaded(state.clone())))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(state.config.max_in_flight));
        Router::new()
            .route("/hooks/{source}", post(routes::hooks::receive))
            .route_layer(shed)
            .route("/healthz", get(routes::health::healthz))
            .route("/readyz", get(routes::health::readyz))
            .merge(Self::status_router(&state, Listener::Public))
            .with_state(state)
    }

    /// The admin listener's routes.
    fn admin_router(state: Arc<AppState>) -> Router {
        Router::new()
            .route("/healthz", get(routes::health::healthz))
            .route("/readyz", get(routes::health::readyz))
            .route("/metrics", get(routes::health::metrics))
            .merge(Self::status_router(&state, Listener::Admin))
            .with_state(state)
    }

    /// The status API, when it has a token and belongs on `listener`.
    fn status_router(state: &Arc<AppState>, listener: Listener) -> Router<Arc<AppState>> {
        if state.config.status_token.is_none() || state.config.status_listener != listener {
            return Router::new();
        }
        Router::new()
            .route("/events/{id}", get(routes::events::by_id))
            .route(
                "/events/{source}/{event_id}",
                get(routes::events::by_event_id),
            )
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                routes::events::require_token,
            ))
    }

    /// Serves until `shutdown` is cancelled, then drains and returns.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = self.state.clone();
        let grace = state.config.shutdown_grace;
        let limits = ConnectionLimits {
            header_read_timeout: state.config.header_read_timeout,
            max_header_bytes: state.config.max_header_bytes,
        };
        let stop_accepting = CancellationToken::new();
        let stopping = state.stopping.clone();
        let drain_delay = state.config.drain_delay;
        let draining = stop_accepting.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            // Readiness turns 503 first; requests are still served while the load
            // balancer notices, then the listeners close.
            stopping.cancel();
            tokio::time::sleep(drain_delay).await;
            draining.cancel();
        });
        tracing::info!(
            port = self.port(),
            admin_port = self.admin_port(),
            "Ingest listening."
        );
        let public = Self::public_router(state.clone());
        let public = tokio::spawn(serve(self.listener, public, limits, stop_accepting.clone()));
        let admin = Self::admin_router(state.clone());
        let admin = tokio::spawn(serve(self.admin, admin, limits, stop_accepting.clone()));
        stop_accepting.cancelled().await;
        // In-flight requests get the grace period; past it they are abandoned
        // (their senders see a reset and retry; nothing unconfirmed was answered 2xx).
        let drained = tokio::time::timeout(grace, async {
            let served = public.await.and(admin.await);
            state.tasks.close();
            state.tasks.wait().await;
            served
        })
        .await;
        state.publisher.close().await;
        match drained {
            Ok(Ok(())) => {
                tracing::info!("Ingest stopped.");
                Ok(())
            }
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

/// The answer to a `/hooks/*` request shed above `ingest.max_in_flight`: 503 with
/// `Retry-After`, counted under the source's name (or `unknown`).
fn overloaded(
    state: Arc<AppState>,
) -> impl Fn(Uri, BoxError) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move |uri: Uri, _: BoxError| {
        let name = uri.path().strip_prefix("/hooks/").unwrap_or_default();
        let label = if state.sources.contains_key(name) {
            name
        } else {
            "unknown"
        };
        let error = IngestError::Overloaded {
            retry_after: state.config.retry_after,
        };
        RequestAnswered {
            source: label,
            outcome: error.outcome(),
            elapsed: None,
        }
        .emit(&state.metrics);
        std::future::ready(error.into_response())
    }
}
