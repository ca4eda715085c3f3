//! The worker's happy path: jobs published as ingest publishes them come out as
//! results on `{ns}.results`, one per job and pipeline, transient AI failures
//! retried through the retry tiers.

use std::collections::BTreeSet;
use std::time::Duration;

use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, header, json_body, mock_anthropic, mock_openai, pending_jobs,
    pipeline, worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::wait::wait_until;
use serde_json::json;

const USER: &str =
    "Ticket {{ meta.event_id }} from {{ payload.customer.name }}: {{ payload.ticket.body }}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_gets_exactly_one_result_despite_transient_ai_failures() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        fail_5xx_rate: 0.15,
        rate_429: 0.05,
        seed: Some(7),
        ..MockConfig::default()
    })
    .await;
    let mut settings = worker_settings(&env, 8);
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(&mock));
    settings.worker.pipelines = vec![pipeline("triage", "mock", USER)];
    let worker = WorkerHandle::start_consuming(settings).await;
    let metrics = worker.metrics.clone();
    let jobs = JobPublisher::new(&env).await;

    let n = 40u64;
    let mut ids = BTreeSet::new();
    for i in 0..n {
        let body = json!({ "customer": { "name": format!("Ada {i}") }, "ticket": { "body": "My order is broken" } });
        ids.insert(
            jobs.publish("support", "ticket.created", &body)
                .await
                .message_id,
        );
    }

    wait_until(Duration::from_secs(25), || {
        let done = worker.jobs("triage", "succeeded");
        async move { done >= n }
    })
    .await;
    let ready = reqwest::get(worker.url("/readyz"))
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 200);
    let exposition = reqwest::get(worker.url("/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics body");
    for name in [
        "hookfleet_jobs_total",
        "hookfleet_job_duration_seconds",
        "hookfleet_ai_requests_total",
        "hookfleet_ai_request_duration_seconds",
        "hookfleet_ai_tokens_total",
        "hookfleet_inflight_jobs",
        "hookfleet_deliveries_settled_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(exposition.contains(name), "{name} missing from /metrics");
    }
    worker.stop().await.expect("the worker stops cleanly");

    assert_eq!(pending_jobs(&env).await, 0, "no job left behind");
    let topology = env.topology();
    let results = env.drain(&topology.results_queue()).await;
    let result_ids: Vec<String> = results
        .iter()
        .map(|m| {
            json_body(m)["message_id"]
                .as_str()
                .expect("message_id")
                .to_owned()
        })
        .collect();
    assert_eq!(result_ids.len() as u64, n, "one result per job");
    assert_eq!(result_ids.iter().cloned().collect::<BTreeSet<_>>(), ids);

    let retried = metrics.jobs.with_label_values(&["triage", "retried"]).get();
    assert!(
        retried > 0,
        "the mock injected failures, so some jobs retried"
    );
    let settled = |outcome: &str| {
        metrics
            .deliveries_settled
            .with_label_values(&[outcome])
            .get()
    };
    assert_eq!(settled("completed"), n, "each job settles once for good");
    assert_eq!(settled("retried"), retried, "retries are settled apart");
    assert_eq!(settled("dead_lettered"), 0);
    let extra_attempts: u64 = results
        .iter()
        .map(|m| json_body(m)["attempts"].as_u64().expect("attempts") - 1)
        .sum();
    assert_eq!(
        extra_attempts, retried,
        "attempts recorded in results add up"
    );
    assert_eq!(
        mock.counters().requests,
        n + retried,
        "one AI call per attempt"
    );

    let first = &results[0];
    let body = json_body(first);
    assert_eq!(
        first.delivery.routing_key.as_str(),
        "triage.support.ticket.created"
    );
    assert_eq!(header(first, "hf-pipeline").as_deref(), Some("triage"));
    assert_eq!(body["source"], "support");
    assert_eq!(body["provider"], "mock");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["output_json"]["sentiment"], "negative");
    assert!(
        body["event_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("evt_"))
    );
    assert!(body["usage"]["input_tokens"].as_u64() > Some(0));
    assert!(env.drain(&topology.dead_queue()).await.is_empty());
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_two_pipelines_match_gets_a_result_from_each_and_unmatched_events_are_acked() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig::default()).await;
    let mut settings = worker_settings(&env, 3);
    let providers = &mut settings.worker.providers;
    providers.insert("gpt".into(), mock_openai(&mock));
    providers.insert("claude".into(), mock_anthropic(&mock));
    let mut summary = pipeline("summary", "claude", "Summarize: {{ payload.ticket.body }}");
    summary.sources = vec!["zendesk*".into(), "support".into()];
    summary.event_types = vec!["ticket.*".into()];
    summary.model = "claude-haiku".into();
    summary.response_format = hookfleet_worker::config::ResponseFormat::Text;
    let mut triage = pipeline("triage", "gpt", USER);
    triage.sources = vec!["support".into()];
    settings.worker.pipelines = vec![triage, summary];
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;

    let body = json!({ "customer": { "name": "Ada" }, "ticket": { "body": "Thanks, great help" } });
    let meta = jobs.publish("support", "ticket.created", &body).await;
    jobs.publish("stripe", "invoice.paid", &json!({ "id": "in_1" }))
        .await;

    wait_until(Duration::from_secs(10), || {
        let done = (
            worker.jobs("triage", "succeeded"),
            worker.jobs("summary", "succeeded"),
            worker.jobs("none", "unmatched"),
        );
        async move { done == (1, 1, 1) }
    })
    .await;
    worker.stop().await.expect("the worker stops cleanly");

    let topology = env.topology();
    let mut results = env.drain(&topology.results_queue()).await;
    results.sort_by_key(|m| m.delivery.routing_key.to_string());
    let keys: Vec<&str> = results
        .iter()
        .map(|m| m.delivery.routing_key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "summary.support.ticket.created",
            "triage.support.ticket.created"
        ]
    );
    for result in &results {
        assert_eq!(json_body(result)["message_id"], meta.message_id.as_str());
    }
    let summary = json_body(&results[0]);
    assert_eq!(summary["provider"], "claude");
    assert!(
        summary["output_json"].is_null(),
        "a text pipeline parses nothing"
    );
    assert!(summary["usage"]["output_tokens"].as_u64() > Some(0));
    let counters = mock.counters();
    assert_eq!(counters.by_provider.get("openai"), Some(&1));
    assert_eq!(counters.by_provider.get("anthropic"), Some(&1));
    assert_eq!(pending_jobs(&env).await, 0);
    assert!(
        env.drain(&topology.dead_queue()).await.is_empty(),
        "unmatched is acked, not dead-lettered"
    );
    jobs.close().await;
}
