//! A job's Redis round trips (issue 15, item 1), counted by Redis itself with
//! `MONITOR` (`hookfleet_tests::redis_monitor`): with the shipped features on —
//! the response cache, a limited model, event status — a job makes one round
//! trip before its AI call (the `processing` status, the claim with its done
//! checks, the cache lookup and the limiter booking) and one after it (the
//! cache fill, the done marker and the `done` status); a cache hit the same
//! two. Every one is a script sent by its SHA-1 (`EVALSHA`).

use std::time::Duration;

use hookfleet_worker::config::{CacheConfig, CacheSettings, ModelLimits, PipelineConfig};

use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, json_body, mock_openai, pipeline, take, worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::redis_monitor::{Command, RedisMonitor};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::wait::wait_until;
use serde_json::json;

const MODEL: &str = "gpt-4o-mini";

fn settings(env: &TestEnv, mock: &MockAi) -> Settings {
    let mut settings = worker_settings(env, 3);
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(mock));
    settings.worker.pipelines = vec![PipelineConfig {
        cache: CacheConfig::On(CacheSettings::default()),
        temperature: Some(0.0),
        ..pipeline("triage", "mock", "{{ payload.ticket.body }}")
    }];
    settings.worker.limits.models = vec![ModelLimits {
        provider: "mock".into(),
        model: MODEL.into(),
        rpm: Some(60_000),
        tpm: None,
        burst_requests: None,
        burst_tokens: None,
        refund_unused: true,
    }];
    // The heartbeat is a timer, not a job's work: it beats once at the start,
    // before the count, and not again during the test.
    settings.worker.heartbeat_interval = Duration::from_secs(3600);
    settings
}

/// Publishes a ticket and waits for its result; whether it was cached.
async fn run_job(env: &TestEnv, jobs: &JobPublisher, body: &str) -> bool {
    jobs.publish(
        "support",
        "ticket.created",
        &json!({ "ticket": { "body": body } }),
    )
    .await;
    let results = take(
        env,
        &env.topology().results_queue(),
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(results.len(), 1);
    json_body(&results[0])["cached"]
        .as_bool()
        .expect("`cached`")
}

/// Waits until the worker has no job in flight (the last one settled).
async fn idle(worker: &WorkerHandle) {
    wait_until(Duration::from_secs(10), || {
        let inflight = worker.inflight();
        async move { inflight == 0 }
    })
    .await;
}

fn names(commands: &[Command]) -> Vec<&str> {
    commands.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_makes_one_round_trip_before_its_ai_call_and_one_after() {
    let env = TestEnv::new().await;
    assert!(
        env.settings.status.enabled,
        "event status is on, as shipped"
    );
    let mock = MockAi::start(MockConfig::default()).await;
    let worker = WorkerHandle::start_consuming(settings(&env, &mock)).await;
    let jobs = JobPublisher::new(&env).await;
    let monitor = RedisMonitor::start(&env.namespace).await;
    let redis = env.redis();

    // The first job may load the script (`NOSCRIPT`, then `SCRIPT LOAD`).
    assert!(!run_job(&env, &jobs, "warm-up").await);
    idle(&worker).await;
    monitor.seen(&redis).await;

    assert!(!run_job(&env, &jobs, "My parcel is late").await, "a miss");
    idle(&worker).await;
    let miss = monitor.seen(&redis).await;
    assert_eq!(names(&miss), ["EVALSHA", "EVALSHA"], "{miss:#?}");
    assert_eq!(mock.counters().requests, 2);

    assert!(run_job(&env, &jobs, "My parcel is late").await, "a hit");
    idle(&worker).await;
    let hit = monitor.seen(&redis).await;
    assert_eq!(names(&hit), ["EVALSHA", "EVALSHA"], "{hit:#?}");
    assert_eq!(mock.counters().requests, 2, "the hit called no provider");

    worker.stop().await.unwrap();
    jobs.close().await;
}
