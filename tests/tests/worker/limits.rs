//! The fleet-wide limiter seen through real workers (issue 4, items 2 and 3):
//! a provider's 429 pauses every worker for that model for the provider's retry
//! time, and a fleet of four workers held to a provider's limits gets no 429 while
//! using at least 95% of them.
//!
//! The mock is the judge in both: it enforces its own limits exactly (a sliding
//! window) and records when it admitted each request and when it answered each
//! 429, so an overshoot or a request sent during a pause shows up in its counts.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, json_body, mock_openai, pipeline, worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig, Prompt};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::config::{ModelLimits, PipelineConfig};
use serde_json::json;

const MODEL: &str = "gpt-4o-mini";
const SYSTEM: &str = "You triage support tickets. Answer in JSON.";

/// Worker settings with one pipeline on the mock and `limits` for its model.
fn settings(env: &TestEnv, mock: &MockAi, limits: ModelLimits, concurrency: u16) -> Settings {
    let mut settings = worker_settings(env, 5);
    settings.worker.concurrency = concurrency;
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(mock));
    settings.worker.pipelines = vec![triage()];
    settings.worker.limits.models = vec![limits];
    settings
}

/// The pipeline: the prompt is the ticket body and nothing else, so prompts of
/// equal length cost the same tokens.
fn triage() -> PipelineConfig {
    PipelineConfig {
        system: Some(SYSTEM.into()),
        max_tokens: Some(100),
        ..pipeline("triage", "mock", "{{ payload.ticket.body }}")
    }
}

/// Publishes one job per body, many at once; returns their message ids.
async fn publish_all(jobs: &JobPublisher, bodies: Vec<String>) -> BTreeSet<String> {
    futures::stream::iter(bodies)
        .map(|body| async move {
            let payload = json!({ "ticket": { "body": body } });
            jobs.publish("support", "ticket.created", &payload)
                .await
                .message_id
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// Waits for one result per id and checks that is exactly what arrived, with
/// nothing dead-lettered or left in the queues.
async fn expect_results(env: &TestEnv, ids: &BTreeSet<String>, deadline: Duration) {
    let topology = env.topology();
    let n = u32::try_from(ids.len()).unwrap();
    let results = hookfleet_tests::fleet::take(env, &topology.results_queue(), n, deadline).await;
    let got: Vec<String> = results
        .iter()
        .map(|m| json_body(m)["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got.len(), ids.len(), "one result per job, no duplicates");
    assert_eq!(&got.into_iter().collect::<BTreeSet<_>>(), ids);
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 0);
    assert_eq!(hookfleet_tests::fleet::pending_jobs(env).await, 0);
}

fn ai_requests(worker: &WorkerHandle, status: &str) -> u64 {
    worker
        .metrics
        .ai_requests
        .with_label_values(&["mock", MODEL, status])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_worker_for_the_providers_retry_time() {
    const JOBS: usize = 60;
    const RETRY_AFTER: Duration = Duration::from_secs(2);
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        rate_limit_marker: Some("THROTTLE".into()),
        rate_limit_retry_after: RETRY_AFTER,
        ..MockConfig::default()
    })
    .await;
    // 20 requests a second: a steady stream on both workers, so a pause that
    // one of them ignored would show up as admissions inside it.
    let limits = ModelLimits {
        provider: "mock".into(),
        model: MODEL.into(),
        rpm: Some(1200),
        tpm: None,
        burst_requests: Some(1),
        burst_tokens: None,
        refund_unused: true,
    };
    let workers = [
        WorkerHandle::start_consuming(settings(&env, &mock, limits.clone(), 4)).await,
        WorkerHandle::start_consuming(settings(&env, &mock, limits, 4)).await,
    ];
    let jobs = JobPublisher::new(&env).await;
    let bodies = (0..JOBS)
        .map(|i| {
            let marker = if i == 10 { " THROTTLE" } else { "" };
            format!("Ticket {i}: where is my parcel?{marker}")
        })
        .collect();
    let ids = publish_all(&jobs, bodies).await;

    wait_until(Duration::from_secs(20), || {
        let throttled = mock.counters().throttled_at_us.len();
        async move { throttled >= 1 }
    })
    .await;
    let before: Vec<u64> = workers.iter().map(|w| ai_requests(w, "200")).collect();
    expect_results(&env, &ids, Duration::from_secs(30)).await;

    let counters = mock.counters();
    assert_eq!(counters.status(429), 1, "one 429, then nobody hit it again");
    assert_eq!(counters.injected("rate_limit_marker"), 1);
    assert_eq!(
        workers.iter().map(|w| ai_requests(w, "429")).sum::<u64>(),
        1
    );
    let throttled = Duration::from_micros(counters.throttled_at_us[0]);
    // Requests already granted when the 429 was answered may still arrive just
    // after it; nothing may be admitted from a quarter second on until the
    // retry time has passed (the pause adds up to 10% jitter on top).
    let during = counters.admitted_between(
        throttled + Duration::from_millis(250),
        throttled + RETRY_AFTER,
    );
    assert_eq!(during, 0, "a worker called the provider during the pause");
    let before_429 = counters.admitted_between(Duration::ZERO, throttled);
    let after_pause = counters.admitted_between(throttled + RETRY_AFTER, Duration::MAX);
    assert!(
        before_429 > 0 && after_pause > 0,
        "{before_429} / {after_pause}"
    );
    assert_eq!(counters.status(200), JOBS as u64, "every job answered once");
    for (worker, before) in workers.iter().zip(before) {
        assert!(
            ai_requests(worker, "200") > before,
            "both workers were calling the provider before and after the pause"
        );
    }
    for worker in workers {
        worker.stop().await.unwrap();
    }
    jobs.close().await;
}

/// Four workers, the mock's limits scaled down to a 10 s window (600 requests and
/// 600 requests' worth of tokens per window: 60/s), the limiter configured at
/// 97% of them with small bursts, as docs/operations.md's sizing section advises. The
/// full-size run (60 s window, 2,000 jobs) is `bench limiter`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_get_no_429s_and_use_at_least_95_percent_of_the_limit() {
    const WORKERS: usize = 4;
    const JOBS: usize = 800;
    const WINDOW: Duration = Duration::from_secs(10);
    const PER_WINDOW: u32 = 600;
    let env = TestEnv::new().await;
    // Every prompt has the same length, so every request costs the same tokens:
    // the prompt estimate plus max_tokens, as the mock and the limiter count.
    let body = |i: usize| format!("Ticket {i:06}: please classify this ticket.");
    let prompt = Prompt::from_pairs(&[("system", SYSTEM), ("user", &body(0))]);
    let cost = prompt.estimate_tokens() + triage().max_tokens.unwrap();
    let mock = MockAi::start(MockConfig {
        rpm_limit: Some(PER_WINDOW),
        tpm_limit: Some(PER_WINDOW * cost),
        rate_window: WINDOW,
        latency: Duration::from_millis(20),
        latency_jitter: Duration::from_millis(20),
        seed: Some(4),
        ..MockConfig::default()
    })
    .await;
    let per_minute = PER_WINDOW * 6 * 97 / 100;
    let limits = ModelLimits {
        provider: "mock".into(),
        model: MODEL.into(),
        rpm: Some(per_minute),
        tpm: Some(per_minute * cost),
        burst_requests: Some(2),
        burst_tokens: Some(2 * cost),
        // The mock, like OpenAI, counts max_tokens at admission and never gives
        // the unused part back.
        refund_unused: false,
    };
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        workers.push(WorkerHandle::start_consuming(settings(&env, &mock, limits.clone(), 8)).await);
    }
    let jobs = JobPublisher::new(&env).await;
    mock.reset_counters();
    let ids = publish_all(&jobs, (0..JOBS).map(body).collect()).await;
    expect_results(&env, &ids, Duration::from_secs(45)).await;

    let counters = mock.counters();
    let first = Duration::from_micros(counters.admitted_at_us[0]);
    let last = Duration::from_micros(*counters.admitted_at_us.last().unwrap());
    // Steady state: after the first second (the burst) up to the last admission
    // (the backlog lasts until then).
    let steady = counters.admitted_per_second(first + Duration::from_secs(1), last);
    let limit = f64::from(PER_WINDOW) / WINDOW.as_secs_f64();
    let busiest = counters.max_admitted_in_any(WINDOW);
    eprintln!(
        "worker limiter accuracy: {WORKERS} workers, {JOBS} jobs in {:.1?}; {} 429s; \
         steady {steady:.2}/s = {:.1}% of the mock's {limit}/s ({:.0} tokens/s of {:.0}); \
         busiest {WINDOW:?}: {busiest} of {PER_WINDOW}",
        last - first,
        counters.status(429),
        100.0 * steady / limit,
        steady * f64::from(cost),
        limit * f64::from(cost),
    );
    assert_eq!(counters.status(429), 0, "the fleet overshot the provider");
    assert_eq!(counters.status(200), JOBS as u64, "one call per job");
    assert!(busiest <= PER_WINDOW as usize);
    assert!(
        counters.tokens_admitted <= u64::from(cost) * JOBS as u64,
        "every request cost what the limiter reserved"
    );
    assert!(
        steady >= 0.95 * limit,
        "steady throughput {steady:.2}/s is under 95% of {limit}/s"
    );
    let acquisitions: u64 = workers
        .iter()
        .map(|w| {
            w.metrics
                .ratelimit_wait
                .with_label_values(&["mock", MODEL])
                .get_sample_count()
        })
        .sum();
    assert_eq!(
        acquisitions, JOBS as u64,
        "each call waited for the limiter"
    );
    for worker in workers {
        worker.stop().await.unwrap();
    }
    jobs.close().await;
}
