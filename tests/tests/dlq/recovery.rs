//! The operator's story of issue 5, through a real worker: the AI provider is
//! down, so 100 events from two sources end in the DLQ as `exhausted`; the
//! provider is fixed; `dlq replay --source github` turns exactly GitHub's events
//! into results, and Stripe's stay in the DLQ, untouched.

use crate::dlq_common;

use std::collections::BTreeSet;
use std::time::Duration;

use dlq_common::dlq;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    JobPublisher, WorkerHandle, header, json_body, mock_openai, pipeline, take, worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use serde_json::json;

const USER: &str = "Ticket: {{ payload.ticket.body }}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_ai_is_fixed_replaying_one_source_processes_exactly_its_events() {
    let env = TestEnv::new().await;
    let topology = env.topology();
    // The outage: every AI call answers 500.
    let mock = MockAi::start(MockConfig {
        fail_5xx_rate: 1.0,
        seed: Some(5),
        ..MockConfig::default()
    })
    .await;
    let mut settings = worker_settings(&env, 2);
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(&mock));
    settings.worker.pipelines = vec![pipeline("triage", "mock", USER)];
    let worker = WorkerHandle::start_consuming(settings.clone()).await;

    let jobs = JobPublisher::new(&env).await;
    let (mut github, mut stripe) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..100 {
        let source = if i % 2 == 0 { "github" } else { "stripe" };
        let body = json!({ "ticket": { "body": format!("case {i} from {source}") } });
        let meta = jobs.publish(source, "ticket.created", &body).await;
        if source == "github" {
            github.insert(meta.message_id);
        } else {
            stripe.insert(meta.message_id);
        }
    }
    jobs.close().await;
    let dead = topology.dead_queue();
    assert_eq!(
        env.wait_for_count(&dead, 100, Duration::from_secs(60))
            .await,
        100,
        "every event is dead-lettered after its attempts"
    );
    assert_eq!(
        env.ready_count(&topology.results_queue()).await,
        0,
        "no result during the outage"
    );
    let outage_calls = mock.counters().requests;
    assert_eq!(outage_calls, 200, "two attempts per event, no more");

    // The fix, then a replay of one source only.
    mock.heal();
    let (summary, output) = dlq(&settings, &["replay", "--source", "github"]).await;
    let summary = summary.unwrap_or_else(|e| panic!("replay fails: {e:#}\n{output}"));
    assert_eq!(
        (summary.matched, summary.replayed, summary.skipped),
        (50, 50, 0)
    );

    let results = take(&env, &topology.results_queue(), 50, Duration::from_secs(60)).await;
    let answered: BTreeSet<String> = results
        .iter()
        .map(|r| json_body(r)["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(results.len(), 50, "one result per replayed event");
    assert_eq!(answered, github, "exactly GitHub's events were processed");
    assert_eq!(mock.counters().requests, outage_calls + 50);

    // Stripe's letters are still dead, with their reason, and nothing else is.
    let left = env.drain(&dead).await;
    let left_ids: BTreeSet<String> = left
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(left_ids, stripe);
    for letter in &left {
        assert_eq!(
            header(letter, "hf-error-class").as_deref(),
            Some("exhausted")
        );
    }
    assert_eq!(env.ready_count(&topology.jobs_queue()).await, 0);
    worker.stop().await.unwrap();
}
