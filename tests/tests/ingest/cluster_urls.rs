//! `amqp.urls` against the machine's broker: a list whose first node is dead
//! connects to the next, and says (log and counter) which node it uses; each
//! reconnection starts with the node after the last one; a deployment that moves
//! from `amqp.url` to `amqp.urls` keeps working on the queues it declared before.
//! (Failover under load, on a real cluster, is `tests/tests/chaos`.)

use std::time::Duration;

use hookfleet_common::metrics::render;
use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::app::TestApp;
use hookfleet_tests::env::AMQP_URL;
use hookfleet_tests::fleet::pipeline;
use hookfleet_tests::webhook::{self, source};

/// Port 1 on localhost refuses at once: a node that is down.
const DEAD_NODE: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

#[tokio::test]
async fn a_dead_first_node_is_skipped_and_the_node_in_use_is_counted() {
    let secret = webhook::standard_secret();
    let mut triage = pipeline("triage", "mock", "{{ payload.ticket.body }}");
    triage.sources = vec!["std".into()];
    let app = TestApp::builder()
        .cluster(vec![DEAD_NODE.into(), AMQP_URL.into()])
        .ingest()
        .source("std", source(SchemeKind::Standard, &[&secret]))
        .pipeline(triage)
        .start()
        .await;
    let ingest = app.ingest.as_ref().expect("ingest runs");
    let body = webhook::ticket("evt-1", "hello");
    let response = webhook::standard_request(
        &reqwest::Client::new(),
        &ingest.hook_url("std"),
        &secret,
        "evt-1",
        &body,
    )
    .send()
    .await
    .expect("ingest answers");
    assert_eq!(response.status(), 202);
    assert_eq!(app.results(1, Duration::from_secs(20)).await.len(), 1);

    let counted = |node: &str| {
        ingest
            .metrics
            .amqp_connections
            .with_label_values(&["hookfleet-ingest", node])
            .get()
    };
    assert_eq!(
        counted("127.0.0.1:5672"),
        1,
        "one connection, to the live node"
    );
    assert_eq!(counted("127.0.0.1:1"), 0, "the dead node never connected");
    let worker = render(&app.workers[0].metrics.registry);
    let lines: Vec<&str> = worker
        .lines()
        .filter(|l| l.starts_with("hookfleet_amqp_connections_total{"))
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains("node=\"127.0.0.1:5672\"")),
        "the worker counts its connections by node too: {lines:?}"
    );
}

#[tokio::test]
async fn moving_from_one_url_to_a_list_keeps_the_queues_declared_before() {
    // The namespace's queues are declared as with `amqp.url` alone (no group size).
    let env = hookfleet_tests::env::TestEnv::new().await;
    let secret = webhook::standard_secret();
    let mut settings = env.settings.clone();
    // The same broker listed twice: the queues are now declared with a group size of 2.
    settings.amqp.urls = vec![AMQP_URL.into(), AMQP_URL.into()];
    settings
        .ingest
        .sources
        .insert("std".into(), source(SchemeKind::Standard, &[&secret]));
    let ingest = hookfleet_tests::spawn::IngestHandle::start(settings).await;
    let body = webhook::ticket("evt-1", "hello");
    let response = webhook::standard_request(
        &reqwest::Client::new(),
        &ingest.hook_url("std"),
        &secret,
        "evt-1",
        &body,
    )
    .send()
    .await
    .expect("ingest answers");
    assert_eq!(
        response.status(),
        202,
        "re-declaring with a group size is accepted"
    );
}

#[tokio::test]
async fn each_reconnection_tries_the_next_node_first() {
    // Two names of the machine's broker around a dead node: three "nodes" told
    // apart by their labels.
    let amqp = hookfleet_common::config::AmqpConfig {
        urls: vec![
            AMQP_URL.into(),
            DEAD_NODE.into(),
            "amqp://guest:guest@localhost:5672/%2f".into(),
        ],
        ..hookfleet_common::config::AmqpConfig::default()
    };
    let registry = hookfleet_common::metrics::registry_with_process_metrics().expect("registry");
    let counter = hookfleet_common::broker::connections_counter(&registry).expect("registers");
    let broker = hookfleet_common::broker::Broker::counted(&amqp, counter.clone());
    let count = |node: &str| counter.with_label_values(&["test", node]).get();
    let mut used = Vec::new();
    for _ in 0..3 {
        let before = (count("127.0.0.1:5672"), count("localhost:5672"));
        let connection = broker.connect("test").await.expect("a node answers");
        used.push(if count("127.0.0.1:5672") > before.0 {
            "127.0.0.1:5672"
        } else if count("localhost:5672") > before.1 {
            "localhost:5672"
        } else {
            "none counted"
        });
        // As after a loss: the next connect is a reconnection.
        let _ = connection.close(200, "next".into()).await;
    }
    assert_eq!(
        used,
        ["127.0.0.1:5672", "localhost:5672", "127.0.0.1:5672"],
        "first the first node, then round the list, skipping the dead one"
    );
    assert_eq!(count("127.0.0.1:1"), 0);
}
