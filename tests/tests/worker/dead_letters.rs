//! Failures that cannot or can no longer succeed end in `{ns}.dead`, once each,
//! with `hf-error`, `hf-error-class`, `hf-stage`, `hf-failed-at` and the original
//! headers and routing key — and the counts add up.

use std::collections::BTreeMap;
use std::time::Duration;

use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, event, header, mock_openai, pending_jobs, pipeline, take,
    worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_worker::config::UnmatchedPolicy;
use lapin::BasicProperties;
use lapin::message::BasicGetMessage;
use serde_json::json;

const USER: &str = "From {{ payload.customer.name }}: {{ payload.ticket.body }}";

/// `hf-error` up to the first `:`: the bounded reason code.
fn reason(message: &BasicGetMessage) -> String {
    let error = header(message, "hf-error").expect("hf-error");
    error.split(':').next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_are_dead_lettered_once_with_their_reason_and_the_counts_add_up() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        fail_marker: Some("FAIL-ALWAYS".into()),
        bad_request_marker: Some("BAD-REQUEST".into()),
        ..MockConfig::default()
    })
    .await;
    let mut settings = worker_settings(&env, 3);
    settings.worker.unmatched = UnmatchedPolicy::DeadLetter;
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(&mock));
    let mut triage = pipeline("triage", "mock", USER);
    triage.sources = vec!["support".into()];
    settings.worker.pipelines = vec![triage];
    let worker = WorkerHandle::start_consuming(settings).await;
    let metrics = worker.metrics.clone();
    let jobs = JobPublisher::new(&env).await;

    let ticket = |text: &str| json!({ "customer": { "name": "Ada" }, "ticket": { "body": text } });
    for i in 0..3 {
        jobs.publish(
            "support",
            "ticket.created",
            &ticket(&format!("FAIL-ALWAYS {i}")),
        )
        .await;
    }
    jobs.publish("support", "ticket.created", &ticket("BAD-REQUEST"))
        .await;
    // The template needs payload.customer.name.
    jobs.publish(
        "support",
        "ticket.created",
        &json!({ "ticket": { "body": "hi" } }),
    )
    .await;
    jobs.publish_meta(&event("support", "ticket.created"), b"not json")
        .await;
    jobs.publish("stripe", "invoice.paid", &json!({ "id": "in_1" }))
        .await;
    let foreign = BasicProperties::default().with_message_id("foreign-1".into());
    jobs.publish_raw("support.ticket.created", b"{}", foreign)
        .await;
    jobs.publish_raw("support.ticket.created", b"{}", BasicProperties::default())
        .await;

    let topology = env.topology();
    let dead = take(&env, &topology.dead_queue(), 9, Duration::from_secs(20)).await;
    worker.stop().await.expect("the worker stops cleanly");

    let by_reason: BTreeMap<String, Vec<&BasicGetMessage>> =
        dead.iter().fold(BTreeMap::new(), |mut map, m| {
            map.entry(reason(m)).or_default().push(m);
            map
        });
    let expected = [
        // reason, count, class, stage, attempts
        ("ai_http_500", 3, "exhausted", "ai", Some("3")),
        ("ai_http_400", 1, "permanent", "ai", Some("1")),
        ("template_error", 1, "permanent", "render", Some("1")),
        ("body_not_json", 1, "poison", "decode", None),
        ("unmatched", 1, "permanent", "match", Some("1")),
        ("not_a_hookfleet_event", 1, "poison", "decode", None),
        ("no_message_id", 1, "poison", "decode", None),
    ];
    assert_eq!(dead.len(), 9, "{by_reason:?}");
    for (code, count, class, stage, attempts) in expected {
        let messages = by_reason
            .get(code)
            .unwrap_or_else(|| panic!("no {code} dead letter"));
        assert_eq!(messages.len(), count, "{code}");
        for m in messages {
            assert_eq!(
                header(m, "hf-error-class").as_deref(),
                Some(class),
                "{code}"
            );
            assert_eq!(header(m, "hf-stage").as_deref(), Some(stage), "{code}");
            assert!(header(m, "hf-failed-at").is_some(), "{code}");
            assert!(header(m, "hf-routing-key").is_some(), "{code}");
            if let Some(attempts) = attempts {
                assert_eq!(header(m, "hf-attempt").as_deref(), Some(attempts), "{code}");
            }
        }
    }
    let exhausted = by_reason["ai_http_500"][0];
    assert_eq!(
        header(exhausted, "hf-source").as_deref(),
        Some("support"),
        "original headers kept"
    );
    assert_eq!(header(exhausted, "hf-pipeline").as_deref(), Some("triage"));
    assert_eq!(
        header(exhausted, "hf-routing-key").as_deref(),
        Some("support.ticket.created"),
        "the original routing key, not the retry queue's"
    );
    assert!(exhausted.delivery.properties.message_id().is_some());
    assert!(
        serde_json::from_slice::<serde_json::Value>(&exhausted.delivery.data).is_ok_and(|b| {
            b["ticket"]["body"]
                .as_str()
                .is_some_and(|t| t.starts_with("FAIL-ALWAYS"))
        }),
        "the body is kept byte for byte"
    );

    // Three exhausted jobs made three calls each; the 400 one; the rest none.
    assert_eq!(mock.counters().requests, 3 * 3 + 1);
    let jobs_total =
        |pipeline: &str, outcome: &str| metrics.jobs.with_label_values(&[pipeline, outcome]).get();
    assert_eq!(jobs_total("triage", "retried"), 3 * 2);
    assert_eq!(jobs_total("triage", "dead_lettered"), 3 + 1 + 1);
    assert_eq!(jobs_total("none", "dead_lettered"), 4);
    assert_eq!(jobs_total("triage", "succeeded"), 0);
    for (code, count, ..) in expected {
        assert_eq!(
            metrics.dead_letters.with_label_values(&[code]).get(),
            count as u64,
            "{code}"
        );
    }
    assert_eq!(pending_jobs(&env).await, 0);
    assert!(env.drain(&topology.results_queue()).await.is_empty());
    jobs.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_routing_key_header_past_255_bytes_is_cut_to_fit_the_dead_letter() {
    let env = TestEnv::new().await;
    let settings = worker_settings(&env, 3);
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;

    let long = format!("support.{}", "é".repeat(200));
    let mut headers = lapin::types::FieldTable::default();
    hookfleet_common::message::put_str(&mut headers, "hf-routing-key", &long);
    let foreign = BasicProperties::default()
        .with_message_id("foreign-long-key".into())
        .with_headers(headers);
    jobs.publish_raw("support.ticket.created", b"{}", foreign)
        .await;

    let topology = env.topology();
    let dead = take(&env, &topology.dead_queue(), 1, Duration::from_secs(20)).await;
    assert_eq!(reason(&dead[0]), "not_a_hookfleet_event");
    let key = dead[0].delivery.routing_key.as_str();
    assert!(key.len() <= 255 && long.starts_with(key), "{key}");
    assert_eq!(header(&dead[0], "hf-routing-key").as_deref(), Some(key));
    worker.stop().await.expect("the worker stops cleanly");
}

/// Runs `hookfleet-worker dlq <args>` in-process; the summary's replayed count.
async fn dlq_replay(settings: &hookfleet_tests::settings::Settings) -> u64 {
    use hookfleet_worker::dlq::{self, DlqCommand};
    let command = DlqCommand::try_parse_from(["replay", "--all"]).expect("valid dlq arguments");
    let mut out = Vec::new();
    let summary = dlq::run(
        &settings.for_worker(),
        command,
        tokio_util::sync::CancellationToken::new(),
        &mut out,
    )
    .await
    .expect("the replay succeeds");
    summary.replayed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_permanent_failure_is_final_and_its_own_dead_letter_replays_it_alone() {
    let env = TestEnv::new().await;
    // `classify` always gets a 400; `summarize` a 500, then its answer.
    let mock = MockAi::start(MockConfig {
        bad_request_marker: Some("BAD-REQUEST".into()),
        fail_first_attempts: 1,
        ..MockConfig::default()
    })
    .await;
    let mut settings = worker_settings(&env, 5);
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(&mock));
    settings.worker.pipelines = vec![
        pipeline("classify", "mock", "BAD-REQUEST {{ payload.ticket.body }}"),
        pipeline("summarize", "mock", "Summarize {{ payload.ticket.body }}"),
    ];
    let worker = WorkerHandle::start_consuming(settings).await;
    let jobs = JobPublisher::new(&env).await;
    jobs.publish(
        "support",
        "ticket.created",
        &json!({ "ticket": { "body": "hi" } }),
    )
    .await;

    let topology = env.topology();
    let results = take(&env, &topology.results_queue(), 1, Duration::from_secs(20)).await;
    assert_eq!(results.len(), 1, "one result, summarize's");
    assert_eq!(
        header(&results[0], "hf-pipeline").as_deref(),
        Some("summarize")
    );
    env.wait_for_count(&topology.dead_queue(), 1, Duration::from_secs(20))
        .await;
    hookfleet_tests::wait::wait_until(Duration::from_secs(10), || {
        let inflight = worker.inflight();
        let env = &env;
        async move { inflight == 0 && pending_jobs(env).await == 0 }
    })
    .await;
    assert_eq!(
        mock.calls_for_prompt_containing("BAD-REQUEST"),
        1,
        "the retry for summarize does not send classify's request again"
    );
    assert_eq!(mock.calls_for_prompt_containing("Summarize"), 2);
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 1);
    assert_eq!(
        worker.jobs("classify", "skipped"),
        1,
        "skipped on the retry"
    );

    // The replay runs classify alone: summarize is not even looked at.
    let summarize_runs =
        worker.jobs("summarize", "succeeded") + worker.jobs("summarize", "duplicate");
    assert_eq!(dlq_replay(&env.settings).await, 1);
    let dead = take(&env, &topology.dead_queue(), 1, Duration::from_secs(20)).await;
    let summarize_after =
        worker.jobs("summarize", "succeeded") + worker.jobs("summarize", "duplicate");
    worker.stop().await.expect("the worker stops cleanly");
    assert_eq!(dead.len(), 1, "the replay failed as before, once");
    assert_eq!(header(&dead[0], "hf-pipeline").as_deref(), Some("classify"));
    let headers = dead[0].delivery.properties.headers().as_ref();
    assert_eq!(
        headers.and_then(|h| hookfleet_common::message::header_u32(h, "hf-replays")),
        Some(1)
    );
    assert_eq!(mock.calls_for_prompt_containing("BAD-REQUEST"), 2);
    assert_eq!(mock.calls_for_prompt_containing("Summarize"), 2);
    assert_eq!(
        summarize_after, summarize_runs,
        "the replay did not run summarize"
    );
    assert!(env.drain(&topology.results_queue()).await.is_empty());
    jobs.close().await;
}
