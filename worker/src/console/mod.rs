//! The web console: server-rendered pages under `/console` on the worker's admin
//! listener, for the people on call — the fleet at a glance, one event's
//! timeline, the dead letters with replay and purge, the loaded pipelines.
//!
//! - `auth`: credentials, the session cookie, CSRF tokens.
//! - `view`: the embedded templates (autoescaped) and `no-store` responses.
//! - `overview`, `event`, `letters`, `pipelines`: one page each.
//! - `selection`: the DLQ filters as form fields; `audit`: who did what, and
//!   the one-use form nonces that make a double submit harmless.
//!
//! The console owns no data. Event status comes from Redis (the reader ingest
//! serves), queue depths from passive declares, the fleet's jobs in flight
//! from the workers' heartbeats (`crate::heartbeat`), counters from this
//! process's registry. Every DLQ read holds the `dlq` commands' lock, and
//! every change is a pass of the `dlq` engine — the same lock, loop guard,
//! pacing and no-loss ordering as the CLI. Off unless `worker.console.enabled`;
//! docs/console.md is the operators' guide.

mod audit;
mod auth;
mod event;
mod letters;
mod overview;
mod pipelines;
mod selection;
mod view;

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Settings;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use hookfleet_common::redis::Pool;
use hookfleet_common::redis::shared::SharedConnection;
use hookfleet_common::redis::status::Statuses;
use hookfleet_common::topology::Topology;
use minijinja::Value;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::heartbeat::Fleet;
use crate::limits::limiter::Limiter;
use crate::metrics::WorkerMetrics;

pub use audit::ConsoleMetrics;
pub use auth::{COOKIE_NAME, Credentials, Operator};
pub use view::ViewError;

/// Why the console could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A template does not compile.
    #[error(transparent)]
    View(#[from] ViewError),
    /// The console's counters could not be registered.
    #[error("cannot register the console's metrics")]
    Metrics(#[source] prometheus::Error),
}

/// What the console's handlers share.
pub struct ConsoleState {
    settings: Settings,
    topology: Topology,
    credentials: Credentials,
    views: view::Views,
    statuses: Statuses,
    redis: SharedConnection,
    nonces: audit::Nonces,
    limiter: Limiter,
    metrics: WorkerMetrics,
    console_metrics: ConsoleMetrics,
    samples: overview::Samples,
    fleet: Fleet,
    worker: String,
    stopping: CancellationToken,
}

/// A built console, ready to be mounted on the admin router.
pub struct Console {
    state: ConsoleState,
}

/// What [`Console::build`] needs from the worker.
pub struct ConsoleParts {
    /// The worker's settings (the console reads `[worker.console]` and the rest).
    pub settings: Settings,
    /// The Redis pool the worker uses.
    pub redis: Pool,
    /// The worker's metrics (read for the overview; the console adds its own).
    pub metrics: WorkerMetrics,
    /// The worker's name, shown on the overview.
    pub worker: String,
}

impl Console {
    /// Builds the console when `worker.console.enabled`, else `None`. Does no I/O.
    pub fn build(parts: ConsoleParts) -> Result<Option<Self>, ConsoleError> {
        let ConsoleParts {
            settings,
            redis,
            metrics,
            worker,
        } = parts;
        let config = &settings.worker.console;
        if !config.enabled {
            return Ok(None);
        }
        let topology = Topology::new(&settings.namespace, &settings.amqp);
        let timeout = settings.redis.timeout;
        let state = ConsoleState {
            credentials: Credentials::new(config),
            views: view::Views::build()?,
            statuses: Statuses::new(
                redis.clone(),
                topology.clone(),
                settings.status.clone(),
                timeout,
            ),
            limiter: Limiter::new(
                redis.clone(),
                topology.clone(),
                &settings.worker.limits,
                timeout,
            ),
            nonces: audit::Nonces::new(
                SharedConnection::new(redis.clone()),
                topology.clone(),
                timeout,
            ),
            fleet: Fleet::new(redis.clone(), topology.clone(), timeout),
            redis: SharedConnection::new(redis),
            console_metrics: ConsoleMetrics::register(&metrics.registry)
                .map_err(ConsoleError::Metrics)?,
            metrics,
            samples: overview::Samples::default(),
            topology,
            worker,
            stopping: CancellationToken::new(),
            settings,
        };
        Ok(Some(Self { state }))
    }

    /// The console's routes, to nest under `/console`. Actions in progress stop
    /// cleanly (as `dlq` commands do on SIGTERM) when `stopping` is cancelled.
    pub fn router(self, stopping: CancellationToken) -> Router {
        let mut state = self.state;
        state.stopping = stopping;
        let state = Arc::new(state);
        Router::new()
            .route("/", get(overview::page))
            .route("/overview/panel", get(overview::panel))
            .route("/events", get(event::page))
            .route("/dlq", get(letters::list))
            .route("/dlq/letter", get(letters::show))
            .route("/dlq/replay", post(letters::replay))
            .route("/dlq/purge", post(letters::purge))
            .route("/pipelines", get(pipelines::page))
            .route("/login", get(login_page).post(login))
            .route("/logout", post(logout))
            .route(
                "/assets/console.css",
                get(|| async { view::asset("text/css", view::CSS) }),
            )
            .route(
                "/assets/console.js",
                get(|| async { view::asset("text/javascript", view::JS) }),
            )
            .fallback(not_found)
            .with_state(state)
    }
}

impl ConsoleState {
    /// The context every page shares, for `operator`.
    fn frame(&self, operator: Option<&Operator>, nav: &str) -> Value {
        minijinja::context! {
            namespace => self.settings.namespace.clone(),
            operator => operator.map(|o| o.name.clone()),
            csrf => operator.map(|o| self.credentials.csrf(o)),
            nav => nav,
        }
    }

    /// Renders a page for an operator: the frame merged with `context`.
    fn render(&self, operator: &Operator, nav: &str, name: &str, context: Value) -> Response {
        self.render_status(StatusCode::OK, operator, nav, name, context)
    }

    fn render_status(
        &self,
        status: StatusCode,
        operator: &Operator,
        nav: &str,
        name: &str,
        context: Value,
    ) -> Response {
        let merged = minijinja::context! { ..context, ..self.frame(Some(operator), nav) };
        self.views.page(status, name, merged)
    }
}

/// A request that carried a valid credential. Anything else is answered 401
/// with the login form, before the handler runs.
pub struct Authed(pub Operator);

impl FromRequestParts<Arc<ConsoleState>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Self::Rejection> {
        state
            .credentials
            .authenticate(&parts.headers, SystemTime::now())
            .map(Authed)
            .ok_or_else(|| login_form(state, StatusCode::UNAUTHORIZED, None))
    }
}

fn login_form(state: &ConsoleState, status: StatusCode, notice: Option<&str>) -> Response {
    let context = minijinja::context! { notice => notice, ..state.frame(None, "login") };
    let mut response = state.views.page(status, "login.html", context);
    if status == StatusCode::UNAUTHORIZED {
        // Bearer, not Basic: a Basic challenge would make browsers pop up their
        // own dialog instead of showing the form.
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hookfleet console\""),
        );
    }
    response
}

async fn login_page(State(state): State<Arc<ConsoleState>>) -> Response {
    login_form(&state, StatusCode::UNAUTHORIZED, None)
}

/// The login form's fields.
#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

async fn login(State(state): State<Arc<ConsoleState>>, Form(form): Form<LoginForm>) -> Response {
    let now = SystemTime::now();
    let session = state
        .credentials
        .login(form.username.trim(), &form.secret)
        .and_then(|operator| Some((state.credentials.session(&operator, now)?, operator)));
    let Some((cookie, operator)) = session else {
        state.console_metrics.login("failed");
        tracing::warn!("Console login refused.");
        return login_form(&state, StatusCode::UNAUTHORIZED, Some("Wrong credentials."));
    };
    state.console_metrics.login("ok");
    tracing::info!(operator = %operator.name, "Console login.");
    let set = format!(
        "{COOKIE_NAME}={cookie}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::SESSION_TTL.as_secs()
    );
    redirect_with_cookie("/console", &set)
}

/// The logout form's fields.
#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<ConsoleState>>,
    Authed(operator): Authed,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !state.credentials.csrf_ok(&operator, &form.csrf) {
        return csrf_refused();
    }
    let clear = format!("{COOKIE_NAME}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    redirect_with_cookie("/console/login", &clear)
}

fn redirect_with_cookie(to: &str, cookie: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    view::no_store(headers);
    response
}

/// A POST without its form's CSRF token.
fn csrf_refused() -> Response {
    view::html_response(
        StatusCode::FORBIDDEN,
        "<!doctype html><p>This form has expired or did not come from the console. Reload the page and try again.</p>".to_owned(),
    )
}

async fn not_found(_: Authed) -> Response {
    view::html_response(
        StatusCode::NOT_FOUND,
        "<!doctype html><p>No such console page.</p>".to_owned(),
    )
}
