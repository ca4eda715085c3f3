//! Graceful shutdown: cancelling the worker's token stops consuming, lets the jobs
//! in flight finish within the grace period, closes cleanly, and leaves every job
//! not finished in the queue for the next worker.

use std::time::Duration;

use hookfleet_tests::app::TestApp;
use hookfleet_tests::fleet::{WorkerHandle, json_body, pipeline};
use hookfleet_tests::mock_ai::MockConfig;
use hookfleet_tests::process::Service;
use hookfleet_tests::wait::wait_until;
use serde_json::json;

/// Pipeline `triage` on a mock answering after `latency`, and one in-process
/// worker when `in_process`.
async fn start(latency: Duration, concurrency: u16, grace: Duration, in_process: bool) -> TestApp {
    TestApp::builder()
        .mock(MockConfig {
            latency,
            ..MockConfig::default()
        })
        .workers(usize::from(in_process))
        .pipeline(pipeline(
            "triage",
            "mock",
            "Ticket {{ meta.message_id }}: {{ payload.ticket.body }}",
        ))
        .configure(move |settings, _| {
            settings.worker.concurrency = concurrency;
            settings.worker.shutdown_grace = grace;
        })
        .start()
        .await
}

async fn wait_inflight(worker: &WorkerHandle, n: i64) {
    wait_until(Duration::from_secs(10), || {
        let inflight = worker.inflight();
        async move { inflight >= n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_jobs_in_flight_finish_and_returns_the_rest_to_the_queue() {
    let mut app = start(
        Duration::from_millis(1500),
        2,
        Duration::from_secs(10),
        true,
    )
    .await;
    let worker = app.workers.remove(0);
    let metrics = worker.metrics.clone();
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({ "ticket": { "body": format!("slow {i}") } });
        ids.push(
            app.publish("support", "ticket.created", &body)
                .await
                .message_id,
        );
    }
    wait_inflight(&worker, 2).await;

    worker.begin_shutdown();
    let draining = reqwest::get(worker.url("/readyz"))
        .await
        .expect("readyz answers");
    assert_eq!(draining.status(), 503, "unready as soon as shutdown begins");
    assert!(!worker.is_finished(), "still draining the slow calls");
    worker.stop().await.expect("a graceful shutdown returns Ok");

    let (env, topology) = (app.env(), app.env().topology());
    let results = env.drain(&topology.results_queue()).await;
    assert_eq!(
        results.len(),
        2,
        "both jobs in flight finished and published"
    );
    assert_eq!(
        metrics
            .jobs
            .with_label_values(&["triage", "succeeded"])
            .get(),
        2
    );
    for result in &results {
        let id = json_body(result)["message_id"].as_str().map(str::to_owned);
        assert!(id.is_some_and(|id| ids.contains(&id)));
    }
    // Prefetch = concurrency: nothing else was taken, so nothing else ran.
    assert_eq!(app.mock.counters().requests, 2);
    env.wait_for_count(&topology.jobs_queue(), 3, Duration::from_secs(5))
        .await;
    assert_eq!(env.ready_count(&topology.jobs_queue()).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_when_the_grace_period_ends_is_left_for_redelivery() {
    let mut app = start(Duration::from_secs(4), 2, Duration::from_millis(300), true).await;
    let worker = app.workers.remove(0);
    app.publish(
        "support",
        "ticket.created",
        &json!({ "ticket": { "body": "slow" } }),
    )
    .await;
    wait_inflight(&worker, 1).await;

    let started = tokio::time::Instant::now();
    worker
        .stop()
        .await
        .expect("shutdown past the grace period still returns Ok");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "did not wait for the slow call"
    );

    let (env, topology) = (app.env(), app.env().topology());
    env.wait_for_count(&topology.jobs_queue(), 1, Duration::from_secs(5))
        .await;
    assert!(env.drain(&topology.results_queue()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_finishes_a_slow_call_and_exits_zero_on_sigterm() {
    let app = start(
        Duration::from_millis(1500),
        8,
        Duration::from_secs(10),
        false,
    )
    .await;
    let worker = app.spawn_ready(Service::Worker, &app.settings).await;
    let meta = app
        .publish(
            "support",
            "ticket.created",
            &json!({ "ticket": { "body": "slow one" } }),
        )
        .await;
    // The call is in flight at the mock when SIGTERM arrives.
    wait_until(Duration::from_secs(10), || {
        let requests = app.mock.counters().requests;
        async move { requests >= 1 }
    })
    .await;
    worker.sigterm();
    let exited = worker.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(exited.code, Some(0), "{}", exited.logs);
    let env = app.env();
    let results = env.drain(&env.topology().results_queue()).await;
    assert_eq!(results.len(), 1, "the slow job finished and published");
    assert_eq!(
        json_body(&results[0])["message_id"],
        meta.message_id.as_str()
    );
    assert_eq!(env.ready_count(&env.topology().jobs_queue()).await, 0);
}
