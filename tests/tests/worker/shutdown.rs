//! Graceful shutdown: cancelling the worker's token stops consuming, lets the jobs
//! in flight finish within the grace period, closes cleanly, and leaves every job
//! not finished in the queue for the next worker.

use std::time::Duration;

use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, json_body, mock_openai, pipeline, worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::wait::wait_until;
use serde_json::json;

async fn start(env: &TestEnv, mock: &MockAi, concurrency: u16, grace: Duration) -> WorkerHandle {
    let mut settings = worker_settings(env, 3);
    settings.worker.concurrency = concurrency;
    settings.worker.shutdown_grace = grace;
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(mock));
    settings.worker.pipelines = vec![pipeline(
        "triage",
        "mock",
        "Ticket {{ meta.message_id }}: {{ payload.ticket.body }}",
    )];
    WorkerHandle::start_consuming(settings).await
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
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_millis(1500),
        ..MockConfig::default()
    })
    .await;
    let worker = start(&env, &mock, 2, Duration::from_secs(10)).await;
    let metrics = worker.metrics.clone();
    let jobs = JobPublisher::new(&env).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({ "ticket": { "body": format!("slow {i}") } });
        ids.push(
            jobs.publish("support", "ticket.created", &body)
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

    let topology = env.topology();
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
    assert_eq!(mock.counters().requests, 2);
    env.wait_for_count(&topology.jobs_queue(), 3, Duration::from_secs(5))
        .await;
    assert_eq!(env.ready_count(&topology.jobs_queue()).await, 3);
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_when_the_grace_period_ends_is_left_for_redelivery() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_secs(4),
        ..MockConfig::default()
    })
    .await;
    let worker = start(&env, &mock, 2, Duration::from_millis(300)).await;
    let jobs = JobPublisher::new(&env).await;
    jobs.publish(
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

    let topology = env.topology();
    env.wait_for_count(&topology.jobs_queue(), 1, Duration::from_secs(5))
        .await;
    assert!(env.drain(&topology.results_queue()).await.is_empty());
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_finishes_a_slow_call_and_exits_zero_on_sigterm() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_millis(1500),
        require_api_key: false,
        ..MockConfig::default()
    })
    .await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // Removed when dropped, also when the test panics.
    let dir = tempfile::Builder::new()
        .prefix(&format!("hf-{}-", env.namespace))
        .tempdir()
        .unwrap();
    let config = format!(
        r#"namespace = "{ns}"
[amqp]
queue_expires = "10m"
retry_tiers = ["200ms", "1s"]
[worker]
admin_listen = "127.0.0.1:{port}"
shutdown_grace = "10s"
[worker.providers.mock]
kind = "openai"
base_url = "{base}/v1"
[[worker.pipelines]]
name = "triage"
sources = ["*"]
event_types = ["*"]
provider = "mock"
model = "gpt-4o-mini"
max_tokens = 128
user = "Ticket: {{{{ payload.ticket.body }}}}"
"#,
        ns = env.namespace,
        base = mock.base_url(),
    );
    std::fs::write(dir.path().join("hookfleet.toml"), config).unwrap();
    let child = tokio::process::Command::new(hookfleet_tests::spawn::binary("hookfleet-worker"))
        .args(["run", "--config"])
        .arg(dir.path().join("hookfleet.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    wait_until(Duration::from_secs(30), || async {
        client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let jobs = JobPublisher::new(&env).await;
    let meta = jobs
        .publish(
            "support",
            "ticket.created",
            &json!({ "ticket": { "body": "slow one" } }),
        )
        .await;
    // The call is in flight at the mock when SIGTERM arrives.
    wait_until(Duration::from_secs(10), || {
        let requests = mock.counters().requests;
        async move { requests >= 1 }
    })
    .await;
    let pid = child.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = env.drain(&env.topology().results_queue()).await;
    assert_eq!(results.len(), 1, "the slow job finished and published");
    assert_eq!(
        json_body(&results[0])["message_id"],
        meta.message_id.as_str()
    );
    assert_eq!(env.ready_count(&env.topology().jobs_queue()).await, 0);
    jobs.close().await;
}
