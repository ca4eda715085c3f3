//! An accepted request's Redis round trips (issue 15, item 1), counted by
//! Redis itself with `MONITOR` (`hookfleet_tests::redis_monitor`): the dedup
//! claim before the publish — a plain `SET … NX GET` for an event with one
//! dedup key — then the claim's confirm and the `accepted` status together
//! after it, one `MULTI` of plain commands (no script). A duplicate costs the
//! claim alone.

use std::time::Duration;

use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::redis_monitor::{Command, RedisMonitor, round_trips};
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::webhook::{self, source};

fn names(commands: &[Command]) -> Vec<&str> {
    commands.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test]
async fn an_accepted_request_makes_two_round_trips_and_a_duplicate_one() {
    let env = TestEnv::new().await;
    assert!(
        env.settings.status.enabled,
        "event status is on, as shipped"
    );
    let secret = webhook::standard_secret();
    let mut settings = env.settings.clone();
    settings
        .ingest
        .sources
        .insert("support".into(), source(SchemeKind::Standard, &[&secret]));
    let ingest = IngestHandle::start(settings).await;
    let monitor = RedisMonitor::start(&env.namespace).await;
    let redis = env.redis();
    let client = reqwest::Client::new();
    let post = |id: &'static str| {
        let body = webhook::ticket(id, "My parcel is late");
        webhook::standard_request(&client, &ingest.hook_url("support"), &secret, id, &body).send()
    };

    // The first request may load the script (`NOSCRIPT`, then `SCRIPT LOAD`).
    assert_eq!(post("msg_warm_up").await.unwrap().status(), 202);
    monitor.seen(&redis).await;

    assert_eq!(post("msg_1").await.unwrap().status(), 202);
    let accepted = monitor.seen(&redis).await;
    assert_eq!(round_trips(&accepted), 2, "{accepted:#?}");
    assert_eq!(
        names(&accepted),
        [
            "SET", "MULTI", "HSETNX", "HSETNX", "RPUSH", "PEXPIRE", "PEXPIRE", "SET", "EXEC"
        ],
        "{accepted:#?}"
    );
    assert!(
        accepted[0].line.contains(r#""NX" "PX""#) && accepted[0].line.ends_with(r#""GET""#),
        "{accepted:#?}"
    );

    assert_eq!(post("msg_1").await.unwrap().status(), 200);
    let duplicate = monitor.seen(&redis).await;
    assert_eq!(names(&duplicate), ["SET"], "{duplicate:#?}");
    assert_eq!(round_trips(&duplicate), 1);

    let jobs = env.topology().jobs_queue();
    env.wait_for_count(&jobs, 2, Duration::from_secs(5)).await;
    ingest.stop().await.unwrap();
}
