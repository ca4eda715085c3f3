//! Proof by killing nodes: a steady stream of signed events through ingest, two
//! workers consuming, and the node leading the jobs queue, then the node leading
//! the results queue, `kill -9`ed and restarted. Every event that got a 2xx must
//! end as a result (or a dead letter); events answered 503 while a queue elected
//! its new leader are retried by the sender, as a real sender would, and land.
//!
//! One node is down at a time: with two of three down, a quorum queue has no
//! majority and stops by design, which is an outage to alert on, not a failover.
//!
//! The longest time ingest answers 503 in a row is bounded
//! ([`LONGEST_503_WINDOW`]): the queue elects a new leader and its record names
//! it, and the publisher replaces any channel RabbitMQ 3.10 would otherwise
//! keep nacking on until the killed node is back (`common/src/publisher.rs`,
//! docs/broker-notes.md). Without that replacement some runs refused every
//! event until the wait for the stream to resume ran out.

use std::time::Duration;

use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::accounting::{Accounting, Landed};
use hookfleet_tests::app::TestApp;
use hookfleet_tests::cluster::LocalCluster;
use hookfleet_tests::fleet::pipeline;
use hookfleet_tests::sender::Sender;
use hookfleet_tests::wait::wait_until;
use hookfleet_tests::webhook::{self, source};

/// One new event every 100 ms: 10 events/s, steady.
const EVERY: Duration = Duration::from_millis(100);
/// Accepted events between two steps, so each step starts under load.
const STEP: usize = 40;
/// The longest stretch from a 503 to the next 2xx the test accepts: several
/// times the measured windows (BENCHMARKS.md, Failover under `make chaos`), so a
/// loaded machine passes and a channel stuck on a dead leader does not.
const LONGEST_503_WINDOW: Duration = Duration::from_secs(15);
/// How long `STEP` more events may take to be accepted: 4 s of stream plus
/// [`LONGEST_503_WINDOW`], with room for a loaded machine.
const STEP_WAIT: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the local RabbitMQ cluster: run `make chaos`"]
async fn killing_the_queue_leaders_loses_no_accepted_event() {
    // The services' warnings (reconnects, refused publishes) explain a failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let cluster = LocalCluster::running();
    let secret = webhook::standard_secret();
    let mut triage = pipeline("triage", "mock", "{{ payload.ticket.body }}");
    triage.sources = vec!["std".into()];
    let app = TestApp::builder()
        .cluster(cluster.urls.clone())
        .ingest()
        .workers(2)
        .source("std", source(SchemeKind::Standard, &[&secret]))
        .pipeline(triage)
        .start()
        .await;
    let topology = app.env().topology();
    let ingest = app.ingest.as_ref().expect("ingest runs");
    let sender = Sender::start(
        ingest.hook_url("std"),
        secret,
        EVERY,
        Duration::from_secs(120),
    );
    sender.wait_accepted(STEP, STEP_WAIT).await;

    for queue in [topology.jobs_queue(), topology.results_queue()] {
        kill_and_restart_leader(&cluster, &sender, &queue).await;
    }
    let log = sender.stop().await;

    let workers = &app.workers;
    let landed = Landed::collect(
        &app.settings.amqp,
        &topology,
        &log.accepted,
        Duration::from_secs(120),
        |_| workers.iter().all(|w| w.inflight() == 0),
    )
    .await;
    let accounting = Accounting::of(&log, &landed);
    println!("chaos accounting: {accounting}");
    assert_eq!(
        accounting.not_accepted, 0,
        "every event is accepted in the end"
    );
    assert_eq!(accounting.lost, 0, "no accepted event is lost");
    assert!(accounting.results >= accounting.accepted - accounting.dead_letters);
    assert!(
        accounting.longest_refusal <= LONGEST_503_WINDOW,
        "ingest refused events for {:?} in a row",
        accounting.longest_refusal
    );
}

/// Kills the node leading `queue`, waits until ingest accepts again and the
/// queue has a new leader, restarts the node and waits until it is back.
async fn kill_and_restart_leader(cluster: &LocalCluster, sender: &Sender, queue: &str) {
    let node = cluster.leader(queue);
    let before = sender.accepted();
    println!("chaos: kill -9 {node}, leader of {queue}, after {before} accepted events");
    cluster.kill(&node);
    sender.wait_accepted(before + STEP, STEP_WAIT).await;
    wait_until(Duration::from_secs(60), || {
        let moved = cluster.leader(queue) != node;
        async move { moved }
    })
    .await;
    println!(
        "chaos: {queue} now led by {}; restarting {node}",
        cluster.leader(queue)
    );
    cluster.start(&node);
    let back = sender.accepted();
    sender.wait_accepted(back + STEP, STEP_WAIT).await;
}
