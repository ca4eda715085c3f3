//! Redelivery safety: a job delivered again — after its result was published, or
//! while its first delivery is still running — costs no second AI call and
//! publishes no second result.

use std::time::Duration;

use hookfleet_common::redis::{self as hredis, redis};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, event, json_body, mock_openai, pending_jobs, pipeline,
    worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::wait::wait_until;
use hookfleet_worker::config::FallbackConfig;
use serde_json::json;

const USER: &str = "Ticket {{ meta.message_id }}: {{ payload.ticket.body }}";

async fn start(env: &TestEnv, mock: &MockAi) -> WorkerHandle {
    let mut settings = worker_settings(env, 3);
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(mock));
    settings.worker.pipelines = vec![pipeline("triage", "mock", USER)];
    WorkerHandle::start_consuming(settings).await
}

async fn wait_for(worker: &WorkerHandle, outcome: &str, n: u64) {
    wait_until(Duration::from_secs(10), || {
        let count = worker.jobs("triage", outcome);
        async move { count >= n }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_again_after_its_result_was_published_costs_no_ai_call_and_no_second_result()
 {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let worker = start(&env, &mock).await;
    let jobs = JobPublisher::new(&env).await;
    let body = json!({ "ticket": { "body": "refund please" } }).to_string();

    // The same message id twice, as the broker redelivers after a crash between
    // the result's confirm and the ack.
    let meta = event("support", "ticket.created");
    jobs.publish_meta(&meta, body.as_bytes()).await;
    wait_for(&worker, "succeeded", 1).await;
    jobs.publish_meta(&meta, body.as_bytes()).await;
    wait_for(&worker, "duplicate", 1).await;

    // A marker set by another worker counts the same.
    let other = event("support", "ticket.created");
    let key = env
        .topology()
        .redis_key(&["done", "triage", &other.message_id]);
    let mut set = redis::cmd("SET");
    set.arg(&key).arg("another-worker").arg("EX").arg(600);
    hredis::run::<()>(&env.redis(), Duration::from_secs(2), &set)
        .await
        .expect("SET the done marker");
    jobs.publish_meta(&other, body.as_bytes()).await;
    wait_for(&worker, "duplicate", 2).await;

    assert_eq!(worker.jobs("triage", "succeeded"), 1);
    worker.stop().await.expect("the worker stops cleanly");
    assert_eq!(mock.counters().requests, 1, "one AI call in all");
    assert_eq!(mock.calls_for_prompt_containing(&meta.message_id), 1);
    assert_eq!(mock.calls_for_prompt_containing(&other.message_id), 0);
    let topology = env.topology();
    let results = env.drain(&topology.results_queue()).await;
    assert_eq!(results.len(), 1, "one result in all");
    assert_eq!(
        json_body(&results[0])["message_id"],
        meta.message_id.as_str()
    );
    assert_eq!(pending_jobs(&env).await, 0);
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_delivered_while_the_first_is_still_running_waits_for_it_instead_of_calling_again() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_millis(1500),
        ..MockConfig::default()
    })
    .await;
    let worker = start(&env, &mock).await;
    let jobs = JobPublisher::new(&env).await;
    let body = json!({ "ticket": { "body": "where is my parcel" } }).to_string();

    // Two copies at once: what a second worker sees when the first one's channel
    // died mid-call and the broker redelivered.
    let meta = event("support", "ticket.created");
    jobs.publish_meta(&meta, body.as_bytes()).await;
    jobs.publish_meta(&meta, body.as_bytes()).await;
    wait_until(Duration::from_secs(10), || {
        let both = (
            worker.jobs("triage", "succeeded"),
            worker.jobs("triage", "duplicate"),
        );
        async move { both == (1, 1) }
    })
    .await;
    worker.stop().await.expect("the worker stops cleanly");

    assert_eq!(
        mock.counters().requests,
        1,
        "the copy waited instead of calling"
    );
    let results = env.drain(&env.topology().results_queue()).await;
    assert_eq!(results.len(), 1);
    assert_eq!(pending_jobs(&env).await, 0);
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlasting_its_lease_keeps_it_so_a_copy_never_runs_beside_it() {
    let env = TestEnv::new().await;
    // Each call takes 0.9 s; the first call of a prompt fails (500), so the job
    // runs its fallback too: 1.8 s in all, longer than the 1.5 s lease, although
    // every single call fits in it (as the config checks require).
    let mock = MockAi::start(MockConfig {
        latency: Duration::from_millis(900),
        fail_first_attempts: 1,
        ..MockConfig::default()
    })
    .await;
    let mut settings = worker_settings(&env, 3);
    settings.worker.lease_ttl = Duration::from_millis(1500);
    settings.worker.limits.max_wait = Duration::from_millis(100);
    let mut provider = mock_openai(&mock);
    provider.timeout = Duration::from_millis(1200);
    settings.worker.providers.insert("mock".into(), provider);
    let mut triage = pipeline("triage", "mock", USER);
    triage.fallbacks = vec![FallbackConfig {
        provider: "mock".into(),
        model: "gpt-4o".into(),
    }];
    settings.worker.pipelines = vec![triage];
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    let body = json!({ "ticket": { "body": "my parcel never came" } }).to_string();

    // Two copies at once, as after a channel loss mid-job.
    let meta = event("support", "ticket.created");
    jobs.publish_meta(&meta, body.as_bytes()).await;
    jobs.publish_meta(&meta, body.as_bytes()).await;
    wait_until(Duration::from_secs(15), || {
        let settled = worker.jobs("triage", "succeeded") + worker.jobs("triage", "duplicate");
        async move { settled >= 2 }
    })
    .await;
    let settled = (
        worker.jobs("triage", "succeeded"),
        worker.jobs("triage", "duplicate"),
    );
    worker.stop().await.expect("the worker stops cleanly");

    assert_eq!(
        mock.counters().requests,
        2,
        "the primary and the fallback, once: the copy waited"
    );
    assert_eq!(settled, (1, 1), "one run, one duplicate");
    let results = env.drain(&env.topology().results_queue()).await;
    assert_eq!(results.len(), 1, "one result");
    assert_eq!(pending_jobs(&env).await, 0);
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_settled_by_a_confirmed_dead_letter_whose_ack_was_lost_is_not_run_again() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        bad_request_marker: Some("BAD-REQUEST".into()),
        ..MockConfig::default()
    })
    .await;
    let worker = start(&env, &mock).await;
    let jobs = JobPublisher::new(&env).await;
    let body = json!({ "ticket": { "body": "BAD-REQUEST" } }).to_string();
    let topology = env.topology();

    let meta = event("support", "ticket.created");
    jobs.publish_meta(&meta, body.as_bytes()).await;
    env.wait_for_count(&topology.dead_queue(), 1, Duration::from_secs(10))
        .await;
    // The very same copy again (same message id, headers and body), as the
    // broker redelivers it when the channel died between the dead letter's
    // confirm and the ack.
    jobs.publish_meta(&meta, body.as_bytes()).await;
    wait_until(Duration::from_secs(10), || {
        // Acked as settled — or, without the settlement record, run again.
        let settled = worker.jobs("none", "duplicate");
        let calls = mock.calls_for_prompt_containing("BAD-REQUEST");
        async move { settled >= 1 || calls >= 2 }
    })
    .await;
    wait_until(Duration::from_secs(10), || {
        let inflight = worker.inflight();
        let env = &env;
        async move { inflight == 0 && pending_jobs(env).await == 0 }
    })
    .await;
    worker.stop().await.expect("the worker stops cleanly");

    assert_eq!(
        mock.calls_for_prompt_containing("BAD-REQUEST"),
        1,
        "one AI call"
    );
    assert_eq!(
        env.drain(&topology.dead_queue()).await.len(),
        1,
        "one dead letter"
    );
    jobs.close().await;
}
