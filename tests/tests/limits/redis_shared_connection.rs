//! The shared multiplexed Redis connection of the hot paths (dedup claims,
//! markers): one connection carries every concurrent command, and a broken one
//! is replaced by the next command instead of failing every command after it.

use std::time::Duration;

use hookfleet_common::redis::{self as hredis};
use hookfleet_ingest::dedupe::{Claim, Dedupe};
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::proxy::Proxy;
use hookfleet_tests::wait::wait_until;

fn dedupe_through(env: &TestEnv, proxy: &Proxy) -> Dedupe {
    let mut config = env.settings.redis.clone();
    config.url = proxy.redis_url();
    config.timeout = Duration::from_millis(500);
    let pool = hredis::pool(&config).expect("pool");
    Dedupe::new(
        pool,
        env.topology(),
        Duration::from_secs(60),
        Duration::from_secs(60),
        config.timeout,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_share_one_connection_and_each_gets_its_answer() {
    let env = TestEnv::new().await;
    let proxy = Proxy::start("127.0.0.1:6379".parse().expect("address")).await;
    let dedupe = dedupe_through(&env, &proxy);
    let claims = (0..200).map(|i| {
        let dedupe = dedupe.clone();
        tokio::spawn(async move {
            let keys = dedupe.keys("src", Some(&format!("evt_{}", i % 100)), None);
            dedupe.claim(&keys, &format!("msg_{i}")).await
        })
    });
    let mut new = 0;
    let mut guards = Vec::new();
    for claim in futures::future::join_all(claims).await {
        match claim.expect("task").expect("Redis answers") {
            Claim::New(guard) => {
                new += 1;
                guards.push(guard);
            }
            // The first claim of each id is unconfirmed while the others arrive.
            Claim::Pending => {}
            Claim::Duplicate(first) => panic!("unconfirmed claim taken as a duplicate of {first}"),
        }
    }
    assert_eq!(new, 100, "each of the 100 ids claimed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_replaced_by_the_next_command() {
    let env = TestEnv::new().await;
    let proxy = Proxy::start("127.0.0.1:6379".parse().expect("address")).await;
    let dedupe = dedupe_through(&env, &proxy);
    let claim = |id: &str, message_id: &str| {
        let (dedupe, id, message_id) = (dedupe.clone(), id.to_owned(), message_id.to_owned());
        async move {
            let keys = dedupe.keys("src", Some(&id), None);
            dedupe.claim(&keys, &message_id).await
        }
    };
    match claim("evt_1", "msg_1").await.expect("answers") {
        Claim::New(guard) => guard.confirm().await.expect("confirmed"),
        other => panic!("{other:?}"),
    }

    proxy.sever();
    // The proxy drops its connections from its own tasks: a command sent in the
    // same instant may still get through, so wait for the cut to show.
    wait_until(Duration::from_secs(5), || async {
        claim("evt_2", "msg_2").await.is_err()
    })
    .await;

    proxy.restore();
    wait_until(Duration::from_secs(5), || async {
        claim("evt_3", "msg_3").await.is_ok()
    })
    .await;
    assert!(
        matches!(
            claim("evt_1", "msg_4").await.expect("answers"),
            Claim::Duplicate(first) if first == "msg_1"
        ),
        "the new connection sees the same Redis"
    );
}
