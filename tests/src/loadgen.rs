//! `loadgen`: signed webhook load against ingest, and its accounting.
//!
//! Two loops. **Closed** keeps `concurrency` requests in flight: it measures what
//! the service sustains. **Open** sends at a fixed rate whatever the service does,
//! and measures each latency from the request's *intended* send time, so a stall
//! shows up in the percentiles instead of silently slowing the sender
//! (coordinated omission). Every request carries a unique event id and a valid
//! signature, so ingest does its full work; `landed` compares the 202s with what
//! actually reached the jobs queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hookfleet_common::signature::{standard, stripe};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};

/// How requests are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheme {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
    /// Stripe (`Stripe-Signature: t=…,v1=…`).
    Stripe,
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port/hooks/{source}`.
    pub url: String,
    /// The source's scheme.
    pub scheme: Scheme,
    /// The signing secret.
    pub secret: String,
    /// Approximate body size in bytes (a support ticket padded to it).
    pub body_bytes: usize,
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `concurrency` requests always in flight.
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// A fixed rate; at most `max_in_flight` outstanding (excess waits, and the
    /// wait counts in its latency).
    Open {
        /// Requests per second.
        rate: f64,
        /// Bound on outstanding requests.
        max_in_flight: usize,
    },
}

/// When to stop.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many requests.
    Count(u64),
    /// After this long (no new requests; outstanding ones finish).
    After(Duration),
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requests sent.
    pub sent: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no HTTP response.
    pub errors: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Completed requests per second.
    pub rps: f64,
    /// Latency percentiles in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Number of 202 answers.
    pub accepted: u64,
}

/// A signed request for one event.
pub fn signed_request(
    client: &reqwest::Client,
    target: &Target,
    event_id: &str,
    body: &[u8],
) -> Result<reqwest::RequestBuilder, hookfleet_common::signature::SignatureError> {
    let ts = unix_now();
    let request = client
        .post(&target.url)
        .header("content-type", "application/json");
    Ok(match target.scheme {
        Scheme::Standard => request
            .header("webhook-id", event_id)
            .header("webhook-timestamp", ts.to_string())
            .header(
                "webhook-signature",
                standard::sign(&target.secret, event_id, ts, body)?,
            ),
        Scheme::Stripe => {
            request.header("stripe-signature", stripe::sign(&target.secret, ts, body))
        }
    }
    .body(body.to_vec()))
}

/// A support-ticket body with `event_id`, padded to about `bytes`.
pub fn ticket_body(event_id: &str, bytes: usize) -> Vec<u8> {
    let mut value = serde_json::json!({
        "id": event_id,
        "type": "ticket.created",
        "ticket": { "subject": "Order arrived broken", "body": "The package was damaged." },
        "customer": { "name": "Ada", "email": "ada@example.com" },
        "padding": ""
    });
    let base = value.to_string().len();
    if bytes > base {
        value["padding"] = serde_json::Value::String("x".repeat(bytes - base));
    }
    value.to_string().into_bytes()
}

/// [`ticket_body`] for many ids at the cost of one copy each: the JSON is built
/// once around a placeholder id of the length of a ULID, and each body splices
/// its id in (serializing the padded ticket per request was a tenth of
/// loadgen's CPU, which it shares with the service it measures).
struct BodyTemplate {
    json: Vec<u8>,
    id_at: usize,
    size: usize,
}

impl BodyTemplate {
    const ID_LEN: usize = 26;

    fn new(size: usize) -> Self {
        let placeholder = "0".repeat(Self::ID_LEN);
        let json = ticket_body(&placeholder, size);
        let id_at = json
            .windows(Self::ID_LEN)
            .position(|w| w == placeholder.as_bytes())
            .unwrap_or(0);
        Self { json, id_at, size }
    }

    fn render(&self, event_id: &str) -> Vec<u8> {
        if event_id.len() != Self::ID_LEN {
            return ticket_body(event_id, self.size);
        }
        let mut body = self.json.clone();
        body[self.id_at..self.id_at + Self::ID_LEN].copy_from_slice(event_id.as_bytes());
        body
    }
}

struct Tally {
    histogram: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
}

/// Told each request's event id and intended send time just before it is sent
/// (end-to-end benchmarks match results to requests with it).
pub type SendObserver = Arc<dyn Fn(&str, Instant) + Send + Sync>;

/// Runs the load and reports.
pub async fn run(target: Target, mode: Mode, stop: Stop) -> Report {
    run_observed(target, mode, stop, None).await
}

/// [`run`], telling `observer` about every request before it is sent.
pub async fn run_observed(
    target: Target,
    mode: Mode,
    stop: Stop,
    observer: Option<SendObserver>,
) -> Report {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap_or_default();
    let tally = Arc::new(Mutex::new(Tally {
        // 1 µs .. 60 s, 3 significant digits.
        histogram: new_histogram(),
        statuses: BTreeMap::new(),
        errors: 0,
    }));
    let started = Instant::now();
    let template = Arc::new(BodyTemplate::new(target.body_bytes));
    let target = Arc::new(target);
    let (limit, interval) = match mode {
        Mode::Closed { concurrency } => (concurrency.max(1), None),
        Mode::Open {
            rate,
            max_in_flight,
        } => (
            max_in_flight.max(1),
            Some(Duration::from_secs_f64(1.0 / rate.max(0.001))),
        ),
    };
    let permits = Arc::new(Semaphore::new(limit));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent: u64 = 0;
    loop {
        let done = match stop {
            Stop::Count(n) => sent >= n,
            Stop::After(d) => started.elapsed() >= d,
        };
        if done {
            break;
        }
        // Open loop: the schedule, so a wait for a free slot counts as latency.
        let scheduled = match interval {
            Some(step) => {
                let at = started + step.mul_f64(sent as f64);
                tokio::time::sleep_until(at.into()).await;
                Some(at)
            }
            None => None,
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        // Closed loop: from the moment the request can go, so the wait for a
        // previous request to finish is not counted twice.
        let intended = scheduled.unwrap_or_else(Instant::now);
        sent += 1;
        let (client, target, tally) = (client.clone(), target.clone(), tally.clone());
        let (observer, template) = (observer.clone(), template.clone());
        tasks.spawn(async move {
            let event_id = ulid::Ulid::new().to_string();
            let body = template.render(&event_id);
            if let Some(observe) = &observer {
                observe(&event_id, intended);
            }
            let result = match signed_request(&client, &target, &event_id, &body) {
                // Read to its end, so the latency covers the whole answer and
                // the connection is free for the next request at once.
                Ok(request) => match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.bytes().await.ok().map(|_| status)
                    }
                    Err(_) => None,
                },
                Err(_) => None,
            };
            let micros = u64::try_from(intended.elapsed().as_micros()).unwrap_or(u64::MAX);
            let mut tally = tally.lock().await;
            let _ = tally.histogram.record(micros.max(1));
            match result {
                Some(status) => *tally.statuses.entry(status).or_default() += 1,
                None => tally.errors += 1,
            }
            drop(permit);
        });
        // Reap finished tasks so the set stays small on long runs.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    let tally = tally.lock().await;
    let completed: u64 = tally.statuses.values().sum();
    let ms = |q: f64| tally.histogram.value_at_quantile(q) as f64 / 1000.0;
    Report {
        sent,
        statuses: tally.statuses.clone(),
        errors: tally.errors,
        seconds,
        rps: completed as f64 / seconds.max(1e-9),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        accepted: tally.statuses.get(&202).copied().unwrap_or(0),
    }
}

/// 1 µs .. 60 s at 3 significant figures.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Ready messages in `queue` (a passive declare; the queue must have no consumer
/// for this to equal what landed).
pub async fn queue_depth(amqp_url: &str, queue: &str) -> Result<u32, lapin::Error> {
    use lapin::options::QueueDeclareOptions;
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let depth = channel
        .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
        .await?
        .message_count();
    let _ = connection.close(200, "done".into()).await;
    Ok(depth)
}

/// Takes up to `count` messages from `queue` within `timeout`, acking each, and
/// returns their bodies (JSON where they parse, strings otherwise).
pub async fn take_messages(
    amqp_url: &str,
    queue: &str,
    count: usize,
    timeout: Duration,
) -> Result<Vec<serde_json::Value>, lapin::Error> {
    use lapin::options::{BasicAckOptions, BasicGetOptions};
    let connection =
        lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        match channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await?
        {
            Some(message) => {
                let body = &message.delivery.data;
                out.push(serde_json::from_slice(body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
                }));
                message
                    .delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await?;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_from_the_template_equals_the_ticket_built_for_its_id() {
        let template = BodyTemplate::new(1024);
        for id in [ulid::Ulid::new().to_string(), "short".to_owned()] {
            assert_eq!(template.render(&id), ticket_body(&id, 1024));
        }
    }
}
