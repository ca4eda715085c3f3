//! Fallback models: a pipeline's next provider/model answers when the one before
//! fails transiently or is paused by the limiter, never after a permanent error.
//! Two mock-ai instances play two providers (the fallback speaks Anthropic).

use std::time::Duration;

use hookfleet_worker::config::FallbackConfig;

use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, header, json_body, mock_anthropic, mock_openai, pending_jobs,
    pipeline, take, worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig, ModelLimits};
use hookfleet_tests::settings::Settings;
use hookfleet_tests::wait::wait_until;
use serde_json::json;

const USER: &str = "Ticket from {{ payload.customer.name }}: {{ payload.ticket.body }}";
const FALLBACK_MODEL: &str = "claude-3-5-haiku";

/// Worker settings: pipeline `triage` on `primary` (openai, `gpt-4o-mini`) with
/// one fallback, `backup` (anthropic, `claude-3-5-haiku`).
fn settings(env: &TestEnv, primary: &MockAi, backup: &MockAi, max_attempts: u32) -> Settings {
    let mut settings = worker_settings(env, max_attempts);
    let providers = &mut settings.worker.providers;
    providers.insert("primary".into(), mock_openai(primary));
    providers.insert("backup".into(), mock_anthropic(backup));
    let mut triage = pipeline("triage", "primary", USER);
    triage.fallbacks = vec![FallbackConfig {
        provider: "backup".into(),
        model: FALLBACK_MODEL.into(),
    }];
    settings.worker.pipelines = vec![triage];
    settings
}

fn ticket(name: &str, text: &str) -> serde_json::Value {
    json!({ "customer": { "name": name }, "ticket": { "body": text } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_5xx_is_answered_by_the_fallback_and_the_result_names_it() {
    let env = TestEnv::new().await;
    let primary = MockAi::start(MockConfig {
        fail_5xx_rate: 1.0,
        ..MockConfig::default()
    })
    .await;
    let backup = MockAi::start(MockConfig::default()).await;
    let worker = WorkerHandle::start_consuming(settings(&env, &primary, &backup, 3)).await;
    let jobs = JobPublisher::new(&env).await;
    let n = 3;
    for i in 0..n {
        jobs.publish(
            "support",
            "ticket.created",
            &ticket(&format!("Ada {i}"), "My order is broken"),
        )
        .await;
    }
    let results = take(
        &env,
        &env.topology().results_queue(),
        n,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(results.len(), n as usize);
    for result in &results {
        let body = json_body(result);
        assert_eq!(body["provider"], "backup", "{body}");
        assert_eq!(body["model"], FALLBACK_MODEL);
        assert_eq!(body["fallback"], 0);
        assert_eq!(
            body["attempts"], 1,
            "the fallback answered on the same attempt"
        );
        assert_eq!(body["output_json"]["sentiment"], "negative");
    }
    assert_eq!(
        primary.counters().requests,
        u64::from(n),
        "primary tried once each"
    );
    assert_eq!(
        backup.counters().by_provider.get("anthropic"),
        Some(&u64::from(n))
    );
    let m = &worker.metrics;
    assert_eq!(
        m.ai_fallbacks
            .with_label_values(&["primary", "gpt-4o-mini", "error"])
            .get(),
        u64::from(n)
    );
    assert_eq!(
        m.ai_requests
            .with_label_values(&["backup", FALLBACK_MODEL, "200"])
            .get(),
        u64::from(n),
        "metrics name the provider/model actually called"
    );
    assert_eq!(worker.jobs("triage", "retried"), 0);
    worker.stop().await.expect("the worker stops cleanly");
    jobs.close().await;
    primary.stop().await.ok();
    backup.stop().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_429_pauses_the_primary_the_next_jobs_go_to_the_fallback() {
    let env = TestEnv::new().await;
    // One request per 30 s: the second gets a 429 with retry-after ≈ 30 s, which
    // pauses the primary fleet-wide for longer than this test runs.
    let primary = MockAi::start(MockConfig {
        model_limits: [(
            "gpt-4o-mini".to_owned(),
            ModelLimits {
                rpm: Some(1),
                tpm: None,
            },
        )]
        .into(),
        rate_window: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await;
    let backup = MockAi::start(MockConfig::default()).await;
    let worker = WorkerHandle::start_consuming(settings(&env, &primary, &backup, 3)).await;
    let jobs = JobPublisher::new(&env).await;
    let results_queue = env.topology().results_queue();

    jobs.publish("support", "ticket.created", &ticket("first", "broken"))
        .await;
    let first = take(&env, &results_queue, 1, Duration::from_secs(10)).await;
    assert_eq!(json_body(&first[0])["provider"], "primary");

    jobs.publish("support", "ticket.created", &ticket("second", "broken"))
        .await;
    let second = take(&env, &results_queue, 1, Duration::from_secs(10)).await;
    assert_eq!(
        json_body(&second[0])["provider"],
        "backup",
        "429 → fallback"
    );
    assert_eq!(primary.counters().status(429), 1);

    let paused = 4;
    for i in 0..paused {
        jobs.publish(
            "support",
            "ticket.created",
            &ticket(&format!("p{i}"), "broken"),
        )
        .await;
    }
    let later = take(&env, &results_queue, paused, Duration::from_secs(15)).await;
    for result in &later {
        assert_eq!(json_body(result)["provider"], "backup");
        assert_eq!(json_body(result)["fallback"], 0);
    }
    assert_eq!(
        primary.counters().requests,
        2,
        "the paused primary is not called at all"
    );
    let m = &worker.metrics;
    let fell = |reason: &str| {
        m.ai_fallbacks
            .with_label_values(&["primary", "gpt-4o-mini", reason])
            .get()
    };
    assert_eq!(fell("error"), 1, "the 429 itself");
    assert_eq!(fell("limiter"), u64::from(paused), "the pause");
    assert_eq!(worker.jobs("triage", "retried"), 0);
    worker.stop().await.expect("the worker stops cleanly");
    jobs.close().await;
    primary.stop().await.ok();
    backup.stop().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_400_does_not_fall_through_and_is_dead_lettered() {
    let env = TestEnv::new().await;
    let primary = MockAi::start(MockConfig {
        bad_request_marker: Some("BAD-REQUEST".into()),
        ..MockConfig::default()
    })
    .await;
    let backup = MockAi::start(MockConfig::default()).await;
    let worker = WorkerHandle::start_consuming(settings(&env, &primary, &backup, 3)).await;
    let jobs = JobPublisher::new(&env).await;
    let meta = jobs
        .publish("support", "ticket.created", &ticket("Ada", "BAD-REQUEST"))
        .await;
    let dead = take(
        &env,
        &env.topology().dead_queue(),
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        dead[0]
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some(meta.message_id.as_str())
    );
    assert_eq!(
        header(&dead[0], "hf-error-class").as_deref(),
        Some("permanent")
    );
    assert_eq!(header(&dead[0], "hf-stage").as_deref(), Some("ai"));
    assert!(header(&dead[0], "hf-error").unwrap().contains("400"));
    wait_until(Duration::from_secs(5), || {
        let settled = worker.jobs("triage", "dead_lettered");
        async move { settled == 1 }
    })
    .await;
    assert_eq!(backup.counters().requests, 0, "no fallback after a 4xx");
    assert_eq!(pending_jobs(&env).await, 0);
    worker.stop().await.expect("the worker stops cleanly");
    jobs.close().await;
    primary.stop().await.ok();
    backup.stop().await.ok();
}
