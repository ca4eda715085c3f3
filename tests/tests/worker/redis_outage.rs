//! A Redis outage under a working fleet (issue 4, item 6). The worker reaches
//! Redis through a proxy the test severs; the broker and the mock stay up.
//!
//! - `redis_failure = "closed"`: no job calls the provider while Redis is away
//!   (the limiter cannot be asked); jobs wait and are deferred to retry tiers
//!   without using attempts, none is lost or dead-lettered, and every one is
//!   answered, exactly once, after Redis returns.
//! - `redis_failure = "open"`: jobs keep being answered during the outage, the
//!   cache bypassed (and counted so), and the worker carries on normally once
//!   Redis is back.

use std::collections::BTreeSet;
use std::time::Duration;

use hookfleet_common::config::FailMode;

use hookfleet_worker::config::ModelLimits;

use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, json_body, mock_openai, pending_jobs, pipeline, take,
    worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::proxy::Proxy;
use hookfleet_tests::settings::Settings;
use hookfleet_tests::wait::wait_until;
use serde_json::json;

const MODEL: &str = "gpt-4o-mini";

/// A worker whose Redis is `proxy`, with the limiter in `mode`.
fn settings(env: &TestEnv, mock: &MockAi, proxy: &Proxy, mode: FailMode) -> Settings {
    let mut settings = worker_settings(env, 3);
    settings.redis.url = proxy.redis_url();
    settings.redis.timeout = Duration::from_millis(500);
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(mock));
    settings.worker.pipelines = vec![pipeline(
        "triage",
        "mock",
        "Ticket {{ meta.message_id }}: {{ payload.ticket.body }}",
    )];
    settings.worker.limits.redis_failure = mode;
    // Short, so jobs waiting for Redis are deferred to a retry tier and come back.
    settings.worker.limits.max_wait = Duration::from_secs(1);
    settings.worker.limits.models = vec![ModelLimits {
        provider: "mock".into(),
        model: MODEL.into(),
        rpm: Some(60_000),
        tpm: Some(10_000_000),
        burst_requests: None,
        burst_tokens: None,
        refund_unused: true,
    }];
    settings
}

async fn redis_proxy() -> Proxy {
    Proxy::start("127.0.0.1:6379".parse().unwrap()).await
}

async fn publish(jobs: &JobPublisher, n: usize, label: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for i in 0..n {
        let body = json!({ "ticket": { "body": format!("{label} ticket {i}") } });
        ids.insert(
            jobs.publish("support", "ticket.created", &body)
                .await
                .message_id,
        );
    }
    ids
}

/// Takes `ids.len()` results and checks they are exactly those jobs'.
async fn expect_results(env: &TestEnv, ids: &BTreeSet<String>, deadline: Duration) {
    let n = u32::try_from(ids.len()).unwrap();
    let results = take(env, &env.topology().results_queue(), n, deadline).await;
    let got: Vec<String> = results
        .iter()
        .map(|m| json_body(m)["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got.len(), ids.len(), "one result per job");
    assert_eq!(&got.into_iter().collect::<BTreeSet<_>>(), ids);
}

fn cache_count(worker: &WorkerHandle, result: &str) -> u64 {
    worker
        .metrics
        .cache_requests
        .with_label_values(&[result])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_holds_jobs_during_a_redis_outage_and_answers_them_all_after() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let proxy = redis_proxy().await;
    let worker =
        WorkerHandle::start_consuming(settings(&env, &mock, &proxy, FailMode::Closed)).await;
    let jobs = JobPublisher::new(&env).await;
    let warm = publish(&jobs, 3, "before").await;
    expect_results(&env, &warm, Duration::from_secs(15)).await;

    proxy.sever();
    let held = publish(&jobs, 10, "during").await;
    // Every job has been through the limiter's wait and back to a retry tier.
    wait_until(Duration::from_secs(20), || {
        let deferred = worker.jobs("triage", "retried");
        async move { deferred >= 10 }
    })
    .await;
    assert_eq!(
        mock.counters().requests,
        3,
        "no provider call without the limiter"
    );
    let topology = env.topology();
    assert_eq!(env.ready_count(&topology.results_queue()).await, 0);
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 0);
    assert!(
        cache_count(&worker, "bypassed") >= 10,
        "the cache was bypassed"
    );

    proxy.restore();
    expect_results(&env, &held, Duration::from_secs(30)).await;
    assert_eq!(mock.counters().requests, 13, "each job called once");
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 0);
    assert_eq!(worker.jobs("triage", "dead_lettered"), 0);
    assert_eq!(pending_jobs(&env).await, 0);

    worker.stop().await.unwrap();
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_keeps_answering_during_a_redis_outage_and_recovers() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let proxy = redis_proxy().await;
    let worker = WorkerHandle::start_consuming(settings(&env, &mock, &proxy, FailMode::Open)).await;
    let jobs = JobPublisher::new(&env).await;
    let warm = publish(&jobs, 3, "before").await;
    expect_results(&env, &warm, Duration::from_secs(15)).await;
    assert_eq!(cache_count(&worker, "bypassed"), 0);

    proxy.sever();
    let during = publish(&jobs, 10, "during").await;
    // Answered while Redis is still away.
    expect_results(&env, &during, Duration::from_secs(20)).await;
    assert_eq!(mock.counters().requests, 13);
    assert!(
        cache_count(&worker, "bypassed") >= 10,
        "every job during the outage bypassed the cache"
    );

    proxy.restore();
    let after = publish(&jobs, 3, "after").await;
    expect_results(&env, &after, Duration::from_secs(15)).await;
    // Back to normal: the cache and the limiter are used again.
    assert_eq!(
        cache_count(&worker, "miss"),
        6,
        "before and after the outage"
    );
    assert_eq!(mock.counters().requests, 16);
    let topology = env.topology();
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 0);
    assert_eq!(pending_jobs(&env).await, 0);

    worker.stop().await.unwrap();
    jobs.close().await;
}
