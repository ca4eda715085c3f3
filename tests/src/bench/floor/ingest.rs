//! The ingest floor: a bare HTTP server (axum on hyper) in a process of its own
//! (`bench floor-server`, from the lab's binaries), under the same closed loop
//! of signed requests as ingest. It reads the body, checks its Standard Webhooks
//! HMAC (`hmac`), claims the delivery id in Redis, publishes with confirm
//! (`lapin`) and answers 202. No config, limits, dedup by body or metrics.
//!
//! [`Work::Bare`] claims with one `SET NX PX` and stops there.
//! [`Work::Shipped`] keeps what ingest keeps with its shipped defaults, as plain
//! commands: the claim as a pending value (`SET … NX PX … GET`), then, after
//! the confirm, one `MULTI` that writes the `accepted` status, its history
//! entry, their expiries and the dedup record naming the message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use deadpool_redis::redis;
use hmac::{Hmac, KeyInit, Mac};
use hookfleet_common::message::{EventMeta, now_rfc3339};
use hookfleet_common::redis::status::{EventInfo, EventState, Transition};
use lapin::{Channel, Connection, ConnectionProperties};
use serde::Serialize;
use sha2::Sha256;

use super::Work;
use crate::bench::broker;
use crate::bench::cpu::CpuSplit;
use crate::bench::ingest::IngestParams;
use crate::bench::procs::{Lab, Layout, Service};
use crate::env::TestEnv;
use crate::fleet;
use crate::loadgen;
use crate::webhook;

/// How long the dedup record lasts (ingest's `dedup_ttl` in the bench config).
const DEDUP_TTL_MS: u64 = 600_000;
/// How long a pending claim lasts: a little over the longest publish.
const PENDING_TTL_MS: u64 = 30_000;
/// How long a status lasts (the shipped `status.ttl`).
const STATUS_TTL_MS: u64 = 7 * 86_400_000;

/// One run of the ingest floor.
#[derive(Debug, Clone, Serialize)]
pub struct IngestFloorRun {
    /// What loadgen saw.
    pub load: loadgen::Report,
    /// Where the CPU went (the server is "floor").
    pub cpu: CpuSplit,
}

/// Starts `bench floor-server` in a fresh namespace, loads it as `bench ingest`
/// loads ingest, checks that every 202 landed, stops it.
pub async fn run(lab: &Lab, params: &IngestParams, work: Work) -> anyhow::Result<IngestFloorRun> {
    crate::bench::in_fresh_namespace(async |env| measure(lab, env, params, work).await).await
}

async fn measure(
    lab: &Lab,
    env: &TestEnv,
    params: &IngestParams,
    work: Work,
) -> anyhow::Result<IngestFloorRun> {
    let layout = Layout::new(64)?;
    let secret = webhook::standard_secret();
    let server = start_server(lab, env, &layout, &secret, work).await?;
    let (load, cpu) = crate::bench::ingest::closed_load(&server, &layout, secret, params).await;
    server.stop().await?;
    crate::bench::ingest::landed(env, &load).await?;
    Ok(IngestFloorRun { load, cpu })
}

async fn start_server(
    lab: &Lab,
    env: &TestEnv,
    layout: &Layout,
    secret: &str,
    work: Work,
) -> anyhow::Result<Service> {
    let mut args = vec![
        "floor-server".to_string(),
        "--listen".into(),
        format!("127.0.0.1:{}", layout.ingest_port),
        "--amqp-url".into(),
        env.settings.amqp.url.clone(),
        "--redis-url".into(),
        env.settings.redis.url.clone(),
        "--exchange".into(),
        env.topology().events_exchange(),
        "--namespace".into(),
        env.namespace.clone(),
    ];
    if work == Work::Shipped {
        args.push("--shipped".into());
    }
    let envs = [("FLOOR_SECRET", secret.to_owned())];
    let mut server = Service::spawn(lab, "floor", "bench", &args, &envs)?;
    let ready = format!("http://127.0.0.1:{}/readyz", layout.ingest_port);
    server.wait_ready(&ready, Duration::from_secs(20)).await?;
    Ok(server)
}

/// What `bench floor-server` needs.
#[derive(Debug, Clone)]
pub struct ServerParams {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// RabbitMQ.
    pub amqp_url: String,
    /// Redis.
    pub redis_url: String,
    /// The events exchange to publish to.
    pub exchange: String,
    /// Prefix of its Redis keys.
    pub namespace: String,
    /// The Standard Webhooks secret (`whsec_…`).
    pub secret: String,
    /// What it keeps in Redis (module docs).
    pub work: Work,
}

struct Floor {
    key: Vec<u8>,
    redis: redis::aio::MultiplexedConnection,
    channel: Channel,
    exchange: String,
    prefix: String,
    work: Work,
}

/// The ingest floor's server (module docs); runs until killed.
pub async fn serve(params: ServerParams) -> anyhow::Result<()> {
    let encoded = params.secret.trim_start_matches("whsec_");
    let key = base64::engine::general_purpose::STANDARD.decode(encoded)?;
    let redis = redis::Client::open(params.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let connection = Connection::connect(&params.amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let floor = Arc::new(Floor {
        key,
        redis,
        channel,
        exchange: params.exchange,
        prefix: format!("{}:floor", params.namespace),
        work: params.work,
    });
    let app = axum::Router::new()
        .route("/hooks/{source}", axum::routing::post(accept))
        .route("/readyz", axum::routing::get(|| async { "ok" }))
        .with_state(floor);
    let listener = tokio::net::TcpListener::bind(params.listen).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            terminate.recv().await;
        })
        .await?;
    Ok(())
}

async fn accept(State(floor): State<Arc<Floor>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    match accept_inner(&floor, &headers, &body).await {
        Ok(status) => status,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn accept_inner(
    floor: &Floor,
    headers: &HeaderMap,
    body: &[u8],
) -> anyhow::Result<StatusCode> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return Ok(StatusCode::BAD_REQUEST);
    };
    if !signed(&floor.key, id, ts, body, signature) {
        return Ok(StatusCode::UNAUTHORIZED);
    }
    let key = format!("{}:{id}", floor.prefix);
    let meta = fleet::event("support", "ticket.created");
    if !claim(floor, &key, &meta).await? {
        return Ok(StatusCode::OK);
    }
    let confirm = floor
        .channel
        .basic_publish(
            floor.exchange.as_str().into(),
            meta.routing_key().into(),
            broker::mandatory(),
            body,
            meta.to_properties(),
        )
        .await?;
    broker::expect_ack(confirm.await?)?;
    if floor.work == Work::Shipped {
        accepted(floor, &key, &meta).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// Claims the delivery id: whether this request is the first with it.
async fn claim(floor: &Floor, key: &str, meta: &EventMeta) -> anyhow::Result<bool> {
    let mut cmd = redis::cmd("SET");
    match floor.work {
        Work::Bare => cmd.arg(key).arg(1).arg("NX").arg("PX").arg(86_400_000),
        Work::Shipped => cmd
            .arg(key)
            .arg(format!("pending:{}", meta.message_id))
            .arg("NX")
            .arg("PX")
            .arg(PENDING_TTL_MS)
            .arg("GET"),
    };
    let previous: Option<String> = cmd.query_async(&mut floor.redis.clone()).await?;
    Ok(match floor.work {
        Work::Bare => previous.is_some(),
        Work::Shipped => previous.is_none(),
    })
}

/// After the confirm: the `accepted` status and its history entry, and the
/// dedup record naming the message, in one transaction.
async fn accepted(floor: &Floor, key: &str, meta: &EventMeta) -> anyhow::Result<()> {
    let state = EventState::Accepted {
        accepted_at: now_rfc3339(),
    };
    let transition = Transition {
        at: now_rfc3339(),
        replays: 0,
        attempt: 0,
        state: state.clone(),
        cause: None,
        pipelines: Vec::new(),
    };
    let (status, history) = (
        format!("{}:status:{}", floor.prefix, meta.message_id),
        format!("{}:history:{}", floor.prefix, meta.message_id),
    );
    redis::pipe()
        .atomic()
        .cmd("HSETNX")
        .arg(&status)
        .arg("state")
        .arg(serde_json::to_string(&state)?)
        .ignore()
        .cmd("HSETNX")
        .arg(&status)
        .arg("event")
        .arg(serde_json::to_string(&EventInfo::from(meta))?)
        .ignore()
        .cmd("RPUSH")
        .arg(&history)
        .arg(serde_json::to_string(&transition)?)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&history)
        .arg(STATUS_TTL_MS)
        .ignore()
        .cmd("PEXPIRE")
        .arg(&status)
        .arg(STATUS_TTL_MS)
        .ignore()
        .cmd("SET")
        .arg(key)
        .arg(&meta.message_id)
        .arg("PX")
        .arg(DEDUP_TTL_MS)
        .ignore()
        .query_async::<()>(&mut floor.redis.clone())
        .await?;
    Ok(())
}

/// Whether one `v1,` signature of `signature` is the HMAC of `{id}.{ts}.{body}`.
fn signed(key: &[u8], id: &str, ts: &str, body: &[u8], signature: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    for part in [id.as_bytes(), b".", ts.as_bytes(), b".", body] {
        mac.update(part);
    }
    let tag = mac.finalize().into_bytes();
    signature.split(' ').any(|s| {
        s.strip_prefix("v1,")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .is_some_and(|sent| sent.as_slice() == tag.as_slice())
    })
}
