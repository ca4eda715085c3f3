//! The operator's story of issue 5, through a real worker: the AI provider is
//! down, so 100 events from two sources end in the DLQ as `exhausted`; the
//! provider is fixed; `dlq replay --source github` turns exactly GitHub's events
//! into results, and Stripe's stay in the DLQ, untouched.

use crate::dlq_common;

use std::collections::BTreeSet;
use std::time::Duration;

use dlq_common::dlq;
use hookfleet_tests::app::TestApp;
use hookfleet_tests::fleet::{header, json_body, pipeline, take};
use hookfleet_tests::mock_ai::MockConfig;
use serde_json::json;

const USER: &str = "Ticket: {{ payload.ticket.body }}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_ai_is_fixed_replaying_one_source_processes_exactly_its_events() {
    // The outage: every AI call answers 500.
    let mut app = TestApp::builder()
        .mock(MockConfig {
            fail_5xx_rate: 1.0,
            seed: Some(5),
            ..MockConfig::default()
        })
        .max_attempts(2)
        .pipeline(pipeline("triage", "mock", USER))
        .start()
        .await;
    let worker = app.take_worker();
    let (env, mock, jobs, settings) = (app.env(), &app.mock, app.jobs(), &app.settings);
    let topology = env.topology();

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
    let (summary, output) = dlq(settings, &["replay", "--source", "github"]).await;
    let summary = summary.unwrap_or_else(|e| panic!("replay fails: {e:#}\n{output}"));
    assert_eq!(
        (summary.matched, summary.replayed, summary.skipped),
        (50, 50, 0)
    );

    let results = take(env, &topology.results_queue(), 50, Duration::from_secs(60)).await;
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
