//! The overview page: queue depths and consumers (passive declares), the
//! fleet's jobs in flight — delivered and not yet acked — and its workers
//! (their heartbeats in Redis, `crate::heartbeat`), this worker's counters
//! (results per minute, AI calls and errors per provider and model, cache hit
//! ratio), and the limiter's pauses (from Redis, fleet-wide).
//!
//! The panel is its own route, which the page's one script fetches every few
//! seconds and swaps in: refreshed without a full reload, and readable without
//! the script. Counters are this process's; a fleet view is Prometheus's job.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hookfleet_common::broker;
use hookfleet_common::telemetry::error_chain;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;

use super::{Authed, ConsoleState};
use crate::heartbeat::Beat;

/// How far back the results rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(300);

/// Samples of the results counter, for a per-minute rate.
#[derive(Default)]
pub struct Samples {
    seen: Mutex<VecDeque<(Instant, u64)>>,
}

impl Samples {
    /// Records `value` now; returns results per minute since the oldest sample
    /// in the window (`None` until two samples a second apart exist).
    fn rate(&self, value: u64, now: Instant) -> Option<f64> {
        let Ok(mut seen) = self.seen.lock() else {
            return None;
        };
        while seen
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            seen.pop_front();
        }
        seen.push_back((now, value));
        let (at, first) = *seen.front()?;
        let elapsed = now.duration_since(at).as_secs_f64();
        (elapsed >= 1.0).then(|| value.saturating_sub(first) as f64 * 60.0 / elapsed)
    }
}

/// Queue figures from passive declares.
#[derive(Debug, Default, Serialize)]
struct Queues {
    jobs_ready: u64,
    consumers: u64,
    dead_ready: u64,
    /// Why the broker could not be asked.
    error: Option<String>,
}

/// The workers' heartbeats, summed.
#[derive(Debug, Default, Serialize)]
struct FleetView {
    /// Jobs delivered and not yet acked, over every live worker.
    unacked: i64,
    /// Their prefetch, summed: the most the fleet holds unacked.
    prefetch: u64,
    /// Each live worker's beat, by name.
    workers: Vec<Beat>,
    /// Why Redis could not be asked.
    error: Option<String>,
}

/// Reads the heartbeats and sums them.
async fn fleet(state: &ConsoleState) -> FleetView {
    match state.fleet.members().await {
        Ok(workers) => FleetView {
            unacked: workers.iter().map(|w| w.in_flight).sum(),
            prefetch: workers.iter().map(|w| u64::from(w.prefetch)).sum(),
            workers,
            error: None,
        },
        Err(e) => FleetView {
            error: Some(error_chain(&e)),
            ..FleetView::default()
        },
    }
}

/// One provider and model's row.
#[derive(Debug, Default, Serialize)]
struct ModelRow {
    provider: String,
    model: String,
    calls: u64,
    errors: u64,
    paused_until: Option<String>,
}

/// `GET /console`.
pub async fn page(State(state): State<Arc<ConsoleState>>, Authed(operator): Authed) -> Response {
    let context = panel_context(&state).await;
    state.render(&operator, "overview", "overview.html", context)
}

/// `GET /console/overview/panel`: the panel alone, for the refresher.
pub async fn panel(State(state): State<Arc<ConsoleState>>, Authed(operator): Authed) -> Response {
    let context = panel_context(&state).await;
    state.render_status(StatusCode::OK, &operator, "overview", "panel.html", context)
}

async fn panel_context(state: &ConsoleState) -> minijinja::Value {
    let (queues, fleet) = tokio::join!(queues(state), fleet(state));
    let m = &state.metrics;
    let results = sum(&m.jobs, |labels| {
        labels.get("outcome").map(String::as_str) == Some("succeeded")
    });
    let rate = state.samples.rate(results, Instant::now());
    let hits = sum(&m.cache_requests, |l| {
        l.get("result").map(String::as_str) == Some("hit")
    });
    let lookups = sum(&m.cache_requests, |l| {
        matches!(
            l.get("result").map(String::as_str),
            Some("hit" | "miss" | "coalesced")
        )
    });
    let (models, limiter_error) = models(state).await;
    minijinja::context! {
        now => humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        worker => state.worker.clone(),
        queues => queues,
        fleet => fleet,
        in_flight => m.inflight.get(),
        results_per_minute => rate.map_or_else(|| "…".to_owned(), |r| format!("{r:.1}")),
        cache_ratio => if lookups == 0 { "—".to_owned() } else { format!("{:.0} %", hits as f64 * 100.0 / lookups as f64) },
        models => models,
        limiter_error => limiter_error,
    }
}

async fn queues(state: &ConsoleState) -> Queues {
    let result = async {
        let connection = broker::connect(&state.settings.amqp, "hookfleet-console").await?;
        let channel = connection.create_channel().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let jobs = channel
            .queue_declare(
                state.topology.jobs_queue().into(),
                passive,
                FieldTable::default(),
            )
            .await?;
        let dead = channel
            .queue_declare(
                state.topology.dead_queue().into(),
                passive,
                FieldTable::default(),
            )
            .await?;
        let _ = connection.close(200, "console overview".into()).await;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Queues {
            jobs_ready: jobs.message_count().into(),
            consumers: jobs.consumer_count().into(),
            dead_ready: dead.message_count().into(),
            error: None,
        })
    }
    .await;
    result.unwrap_or_else(|e| Queues {
        error: Some(error_chain(e.as_ref())),
        ..Queues::default()
    })
}

/// Every provider/model a pipeline may call, with its counters and pause.
async fn models(state: &ConsoleState) -> (Vec<ModelRow>, Option<String>) {
    let mut pairs = BTreeSet::new();
    for p in &state.settings.worker.pipelines {
        pairs.insert((p.provider.clone(), p.model.clone()));
        for f in &p.fallbacks {
            pairs.insert((f.provider.clone(), f.model.clone()));
        }
    }
    let now_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let mut rows = Vec::new();
    let mut limiter_error = None;
    for (provider, model) in pairs {
        let of_model = |l: &BTreeMap<String, String>| {
            l.get("provider") == Some(&provider) && l.get("model") == Some(&model)
        };
        let calls = sum(&state.metrics.ai_requests, of_model);
        let errors = sum(&state.metrics.ai_requests, |l| {
            of_model(l) && !l.get("status").is_some_and(|s| s.starts_with('2'))
        });
        let paused_until = match state.limiter.state(&provider, &model).await {
            Ok(s) if s.paused_until > now_micros => Some(
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_micros(s.paused_until),
                )
                .to_string(),
            ),
            Ok(_) => None,
            Err(e) => {
                limiter_error = Some(error_chain(&e));
                None
            }
        };
        rows.push(ModelRow {
            provider,
            model,
            calls,
            errors,
            paused_until,
        });
    }
    (rows, limiter_error)
}

/// The sum of a counter vector's series whose labels pass `keep`.
fn sum(vec: &prometheus::IntCounterVec, keep: impl Fn(&BTreeMap<String, String>) -> bool) -> u64 {
    use prometheus::core::Collector;
    let mut total = 0;
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: BTreeMap<String, String> = metric
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            if keep(&labels) {
                total += metric.get_counter().get_value() as u64;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_per_minute_over_the_window() {
        let samples = Samples::default();
        let start = Instant::now();
        assert_eq!(samples.rate(10, start), None);
        let rate = samples.rate(40, start + Duration::from_secs(30)).unwrap();
        assert!((rate - 60.0).abs() < 0.01, "{rate}");
        let later = start + RATE_WINDOW + Duration::from_secs(10);
        let rate = samples.rate(100, later).unwrap();
        // The first sample fell out of the window; the rate runs from the second.
        let expected = 60.0 * 60.0 / (RATE_WINDOW.as_secs_f64() - 20.0);
        assert!((rate - expected).abs() < 0.01, "{rate}");
    }
}
