//! A replay cancelled half-way (Ctrl-C) loses nothing and duplicates nothing:
//! every letter is either still in the DLQ or in the jobs queue, exactly once —
//! and a second command cannot interleave with a running one.

use crate::dlq_common;

use std::time::Duration;

use dlq_common::{Spec, distinct, dlq, dlq_with, ids, ids_of, is_rotation, publish_specs};
use hookfleet_tests::env::TestEnv;
use hookfleet_worker::dlq::{DlqError, Summary};
use tokio_util::sync::CancellationToken;

/// Replays `args` at 40/s, cancels once 10 letters reached the jobs queue, and
/// checks the accounting. Returns the summary, the ids left in the DLQ and the
/// kept ids in their original order.
async fn cancel_mid_replay(env: &TestEnv, args: &[&str]) -> (Summary, Vec<String>, Vec<String>) {
    let topology = env.topology();
    let specs: Vec<Spec> = (0..100)
        .map(|i| Spec::exhausted(if i % 2 == 0 { "github" } else { "stripe" }))
        .collect();
    let letters = publish_specs(env, &specs).await;
    let all = ids_of(&letters, |_| true);

    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        let settings = env.settings.clone();
        let jobs = topology.jobs_queue();
        tokio::spawn(async move {
            let env_count = |queue: String| {
                let settings = settings.clone();
                async move { ready(&settings, &queue).await }
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while env_count(jobs.clone()).await < 10 {
                assert!(tokio::time::Instant::now() < deadline, "replay started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cancel.cancel();
        })
    };
    let (summary, output) = dlq_with(&env.settings, args, cancel).await;
    canceller.await.expect("canceller");
    let summary = summary.expect("a cancelled replay still returns its summary");

    assert!(summary.cancelled, "{summary:?}");
    assert!(output.starts_with("Interrupted."), "{output}");
    assert!(
        summary.replayed >= 10 && summary.replayed < 50,
        "stopped part-way: {summary:?}"
    );
    assert_eq!(summary.failed, 0);

    let jobs = ids(&env.drain(&topology.jobs_queue()).await);
    let dead = ids(&env.drain(&topology.dead_queue()).await);
    assert_eq!(
        jobs.len() as u64,
        summary.replayed,
        "every confirmed replay was acked once"
    );
    let jobs_set = distinct(&jobs);
    let dead_set = distinct(&dead);
    assert!(
        jobs_set.is_disjoint(&dead_set),
        "no letter is in both queues"
    );
    let mut everything: Vec<String> = jobs.iter().chain(&dead).cloned().collect();
    everything.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(everything, expected, "no letter lost");
    let kept_in_order: Vec<String> = all.into_iter().filter(|id| dead_set.contains(id)).collect();
    (summary, dead, kept_in_order)
}

/// Ready messages of `queue`, on a connection of its own.
async fn ready(settings: &hookfleet_tests::settings::Settings, queue: &str) -> u32 {
    use lapin::options::QueueDeclareOptions;
    let connection = lapin::Connection::connect(&settings.amqp.url, Default::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let count = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            Default::default(),
        )
        .await
        .expect("queue")
        .message_count();
    let _ = connection.close(200, "done".into()).await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_replay_loses_and_duplicates_nothing() {
    let env = TestEnv::new().await;
    let (summary, dead, kept) =
        cancel_mid_replay(&env, &["replay", "--all", "--rate", "40/s"]).await;
    // Nothing had to be put back: the rest is exactly as it was.
    assert_eq!(summary.requeued, 0);
    assert_eq!(dead, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_replay_that_was_putting_letters_back_loses_and_duplicates_nothing() {
    let env = TestEnv::new().await;
    let (summary, dead, kept) = cancel_mid_replay(
        &env,
        &[
            "replay", "--source", "github", "--rate", "40/s", "--hold", "4",
        ],
    )
    .await;
    assert!(summary.requeued > 0, "{summary:?}");
    // The pass had started rotating: the DLQ is the same cycle, starting elsewhere.
    assert!(is_rotation(&kept, &dead), "kept {kept:?}\nleft {dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_command_is_refused_while_one_runs() {
    let env = TestEnv::new().await;
    let topology = env.topology();
    publish_specs(&env, &vec![Spec::exhausted("github"); 20]).await;
    let cancel = CancellationToken::new();
    let first = {
        let settings = env.settings.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            dlq_with(&settings, &["replay", "--all", "--rate", "10/s"], cancel).await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while env.ready_count(&topology.jobs_queue()).await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first replay started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (second, _) = dlq(&env.settings, &["stats"]).await;
    assert!(
        matches!(second, Err(DlqError::Busy { .. })),
        "refused: {second:?}"
    );

    cancel.cancel();
    let (first, _) = first.await.expect("first task");
    assert!(first.expect("first replay").cancelled);
    // The lock went with the first command's connection.
    let (third, _) = dlq(&env.settings, &["stats", "--json"]).await;
    third.expect("stats after the first command ended");
}
