//! The whole path: signed webhooks → ingest → two workers → mock AI → results or
//! dead letters. Every accepted event ends as exactly one of them, under the same
//! message id ingest returned.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::{
    WorkerHandle, header, json_body, mock_openai, pipeline, worker_settings,
};
use hookfleet_tests::mock_ai::{MockAi, MockConfig};
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::webhook::{self, source};

const USER: &str = "Ticket from {{ payload.customer.name }}: {{ payload.ticket.body }}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_become_exactly_one_result_or_one_dead_letter_each() {
    let env = TestEnv::new().await;
    let mock = MockAi::start(MockConfig {
        fail_5xx_rate: 0.2,
        fail_marker: Some("FAIL-ALWAYS".into()),
        seed: Some(11),
        ..MockConfig::default()
    })
    .await;
    let secret = webhook::standard_secret();
    let mut settings = worker_settings(&env, 10);
    settings
        .ingest
        .sources
        .insert("support".into(), source(SchemeKind::Standard, &[&secret]));
    settings
        .worker
        .providers
        .insert("mock".into(), mock_openai(&mock));
    let mut triage = pipeline("triage", "mock", USER);
    triage.sources = vec!["support".into()];
    triage.event_types = vec!["ticket.*".into()];
    settings.worker.pipelines = vec![triage];

    let ingest = IngestHandle::start(settings.clone()).await;
    let workers = [
        WorkerHandle::start_consuming(settings.clone()).await,
        WorkerHandle::start_consuming(settings.clone()).await,
    ];

    const GOOD: usize = 80;
    const DOOMED: usize = 10;
    let client = reqwest::Client::new();
    let answers: Vec<(bool, u16, String)> = futures::stream::iter(0..GOOD + DOOMED)
        .map(|i| {
            let (client, secret, url) =
                (client.clone(), secret.clone(), ingest.hook_url("support"));
            async move {
                let doomed = i >= GOOD;
                let text = if doomed {
                    "FAIL-ALWAYS please"
                } else {
                    "my order arrived broken"
                };
                let id = format!("tkt-{i}");
                let body = webhook::ticket(&id, &format!("{text} #{i}"));
                let response = webhook::standard_request(&client, &url, &secret, &id, &body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let json: serde_json::Value = response.json().await.unwrap();
                (
                    doomed,
                    status,
                    json["id"].as_str().unwrap_or_default().to_owned(),
                )
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(answers.iter().all(|(_, s, _)| *s == 202), "all accepted");
    let expect_results: BTreeSet<String> = answers
        .iter()
        .filter(|a| !a.0)
        .map(|a| a.2.clone())
        .collect();
    let expect_dead: BTreeSet<String> = answers
        .iter()
        .filter(|a| a.0)
        .map(|a| a.2.clone())
        .collect();

    let topology = env.topology();
    env.wait_for_count(
        &topology.results_queue(),
        GOOD as u32,
        Duration::from_secs(60),
    )
    .await;
    env.wait_for_count(
        &topology.dead_queue(),
        DOOMED as u32,
        Duration::from_secs(60),
    )
    .await;
    for worker in workers {
        worker.stop().await.unwrap();
    }
    ingest.stop().await.unwrap();

    let results = env.drain(&topology.results_queue()).await;
    let dead = env.drain(&topology.dead_queue()).await;
    let result_ids: BTreeSet<String> = results
        .iter()
        .map(|m| json_body(m)["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(results.len(), GOOD, "exactly one result per event");
    assert_eq!(
        result_ids, expect_results,
        "results carry ingest's message ids"
    );
    for result in &results {
        let body = json_body(result);
        assert_eq!(body["pipeline"], "triage");
        assert_eq!(body["output_json"]["sentiment"], "negative", "{body}");
    }
    let dead_ids: BTreeSet<String> = dead
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
    assert_eq!(
        dead.len(),
        DOOMED,
        "exactly one dead letter per doomed event"
    );
    assert_eq!(dead_ids, expect_dead);
    for letter in &dead {
        assert_eq!(
            header(letter, "hf-error-class").as_deref(),
            Some("exhausted")
        );
        assert_eq!(header(letter, "hf-stage").as_deref(), Some("ai"));
        assert!(header(letter, "hf-error").unwrap().contains("500"));
    }
    assert_eq!(
        env.ready_count(&topology.jobs_queue()).await,
        0,
        "nothing left over"
    );
    let injected = mock.counters().injected("server_error");
    assert!(injected > 0, "the mock did fail transiently ({injected})");
}
