//! Redis is not a single point of loss: Redis killed in the middle of a run and
//! restarted empty — the dedup window, the done markers, the leases and the
//! limiter's buckets all gone — loses no event. What it costs is duplicates: an
//! event a sender delivers again after the restart is accepted again (its dedup
//! record is gone) and answered again. They are allowed, and counted here.
//!
//! The test runs its own `redis-server` on a free port; the machine's Redis is
//! never touched.

use std::time::Duration;

use hookfleet_worker::config::ModelLimits;

use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::accounting::{Accounting, Landed};
use hookfleet_tests::app::TestApp;
use hookfleet_tests::fleet::pipeline;
use hookfleet_tests::redis_server::RedisServer;
use hookfleet_tests::sender::Sender;
use hookfleet_tests::webhook::{self, source};

/// Events a provider delivers a second time after the restart.
const RESENT: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_that_loses_every_key_loses_no_event() {
    let mut redis = RedisServer::start().await;
    let secret = webhook::standard_secret();
    let app = app(&redis, &secret).await;
    let url = app.ingest.as_ref().expect("ingest runs").hook_url("std");
    let sender = Sender::start(
        url.clone(),
        secret.clone(),
        Duration::from_millis(50),
        Duration::from_secs(60),
    );
    sender.wait_accepted(40, Duration::from_secs(30)).await;

    redis.kill();
    let during = sender.accepted();
    // Ingest's dedup check fails open: events are still accepted while Redis is away.
    sender
        .wait_accepted(during + 20, Duration::from_secs(30))
        .await;
    redis.restart().await;
    let after = sender.accepted();
    sender
        .wait_accepted(after + 40, Duration::from_secs(30))
        .await;
    let accepted_again = resend_first(&url, &secret, RESENT).await;
    let log = sender.stop().await;

    let workers = &app.workers;
    let expected_results = log.accepted.len() + accepted_again;
    let landed = Landed::collect(
        &app.settings.amqp,
        &app.env().topology(),
        &log.accepted,
        Duration::from_secs(60),
        |landed| {
            landed.results.values().sum::<usize>() + landed.dead.values().sum::<usize>()
                >= expected_results
                && workers.iter().all(|w| w.inflight() == 0)
        },
    )
    .await;
    let accounting = Accounting::of(&log, &landed);
    println!(
        "redis restart accounting: {accounting}; delivered again after the restart and accepted again: {accepted_again} of {RESENT}"
    );
    assert_eq!(
        accounting.not_accepted, 0,
        "every event is accepted in the end"
    );
    assert_eq!(accounting.lost, 0, "no accepted event is lost");
    assert_eq!(
        accepted_again, RESENT,
        "the dedup window went with the keys"
    );
    assert!(
        accounting.duplicates >= accepted_again,
        "each event accepted again is answered again: {accounting}"
    );
}

/// Ingest and two workers on `redis`, with a limiter for the mock's model so its
/// buckets live in Redis too.
async fn app(redis: &RedisServer, secret: &str) -> TestApp {
    let mut triage = pipeline("triage", "mock", "{{ payload.ticket.body }}");
    triage.sources = vec!["std".into()];
    let redis_url = redis.url();
    TestApp::builder()
        .ingest()
        .workers(2)
        .source("std", source(SchemeKind::Standard, &[secret]))
        .pipeline(triage)
        .configure(move |settings, _| {
            settings.redis.url = redis_url;
            settings.redis.timeout = Duration::from_millis(300);
            settings.worker.limits.max_wait = Duration::from_secs(1);
            settings.worker.limits.models = vec![ModelLimits {
                provider: "mock".into(),
                model: "gpt-4o-mini".into(),
                rpm: Some(60_000),
                tpm: Some(10_000_000),
                burst_requests: None,
                burst_tokens: None,
                refund_unused: true,
            }];
        })
        .start()
        .await
}

/// Delivers the first `n` events again, as a provider retrying them would;
/// returns how many ingest accepted again.
async fn resend_first(url: &str, secret: &str, n: usize) -> usize {
    let client = reqwest::Client::new();
    let mut accepted = 0;
    for i in 0..n {
        let id = format!("evt-{i:06}");
        let body = webhook::ticket(&id, &format!("ticket {id}: my order never arrived"));
        let response = webhook::standard_request(&client, url, secret, &id, &body)
            .send()
            .await
            .expect("ingest answers");
        if response.status().is_success() {
            accepted += 1;
        }
    }
    accepted
}
