//! `dlq replay` moves exactly the matching dead letters to the jobs queue — same
//! message id and body, `hf-attempt` 0, `hf-replays` + 1 — and leaves every other
//! letter in the DLQ, in its order; with `--dry-run` it changes nothing, and the
//! loop guard keeps letters replayed too often unless `--force`.

use crate::dlq_common;

use std::time::Duration;

use dlq_common::{Published, Spec, dlq, header, header_u32, ids, ids_of, publish_specs};
use hookfleet_common::message;
use hookfleet_tests::env::TestEnv;
use lapin::message::BasicGetMessage;

/// 100 letters, two sources interleaved unevenly (github at every third place).
fn two_sources() -> Vec<Spec> {
    (0..100)
        .map(|i| Spec::exhausted(if i % 3 == 0 { "github" } else { "stripe" }))
        .collect()
}

/// Every replayed job is the letter's body and id as a fresh attempt.
fn assert_replayed(jobs: &[BasicGetMessage], letters: &[Published], replays: u32) {
    for job in jobs {
        let id = dlq_common::id(job);
        let letter = letters
            .iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("{id} was a dead letter"));
        assert_eq!(job.delivery.data, letter.body, "body unchanged");
        assert_eq!(header_u32(job, message::ATTEMPT), Some(0), "attempt reset");
        assert_eq!(header_u32(job, message::REPLAYS), Some(replays));
        for gone in [
            message::ERROR,
            message::ERROR_CLASS,
            message::STAGE,
            message::FAILED_AT,
        ] {
            assert!(header(job, gone).is_none(), "{gone} removed");
        }
        assert!(
            header(job, "hf-last-error").is_some(),
            "the last error is kept"
        );
        assert!(
            header(job, message::SOURCE).is_some(),
            "original headers kept"
        );
        assert!(
            header(job, message::ROUTING_KEY).is_some(),
            "original headers kept"
        );
        assert_eq!(job.delivery.properties.delivery_mode(), &Some(2));
    }
}

async fn replay_one_source_keeps_the_rest_in_order(extra: &[&str], put_back: u64) {
    let env = TestEnv::new().await;
    let topology = env.topology();
    let letters = publish_specs(&env, &two_sources()).await;
    let github = ids_of(&letters, |l| l.source == "github");
    let stripe = ids_of(&letters, |l| l.source == "stripe");

    let mut args = vec!["replay", "--source", "github"];
    args.extend_from_slice(extra);
    let (summary, output) = dlq(&env.settings, &args).await;
    let summary = summary.expect("the replay succeeds");

    assert_eq!(summary.matched, github.len() as u64, "{output}");
    assert_eq!(summary.replayed, github.len() as u64);
    assert_eq!((summary.skipped, summary.failed), (0, 0));
    assert_eq!(summary.scanned, 100);
    assert_eq!(summary.requeued, put_back, "{summary:?}");
    assert!(output.contains("Replayed 34 dead letters"), "{output}");

    let jobs = env.drain(&topology.jobs_queue()).await;
    let mut replayed = ids(&jobs);
    replayed.sort();
    let mut expected = github.clone();
    expected.sort();
    assert_eq!(
        replayed, expected,
        "exactly the github letters were replayed"
    );
    assert_replayed(&jobs, &letters, 1);

    let dead = env.drain(&topology.dead_queue()).await;
    assert_eq!(
        ids(&dead),
        stripe,
        "the other letters stayed, in their order"
    );
    for letter in &dead {
        assert_eq!(
            header_u32(letter, message::REPLAYS),
            Some(0),
            "kept letters are unchanged"
        );
        assert!(header(letter, message::ERROR).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_one_source_moves_exactly_its_letters_and_keeps_the_others_in_order() {
    // 100 letters fit the default hold window: nothing is rewritten.
    replay_one_source_keeps_the_rest_in_order(&[], 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_longer_than_the_hold_window_puts_the_others_back_in_order() {
    // A window of 8: the 66 stripe letters go round to the tail, in order.
    replay_one_source_keeps_the_rest_in_order(&["--hold", "8"], 66).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_and_the_loop_guard_keeps_letters_replayed_too_often() {
    let env = TestEnv::new().await;
    let topology = env.topology();
    let specs: Vec<Spec> = (0..10)
        .map(|i| Spec {
            replays: if i < 3 { 3 } else { i % 3 },
            ..Spec::exhausted("shopify")
        })
        .collect();
    let letters = publish_specs(&env, &specs).await;
    let all = ids_of(&letters, |_| true);

    let (summary, output) = dlq(&env.settings, &["replay", "--dry-run"]).await;
    let summary = summary.expect("dry run");
    assert_eq!(
        (summary.matched, summary.skipped, summary.replayed),
        (10, 3, 0)
    );
    assert!(
        output.contains("Dry run: 7 dead letters would be replayed"),
        "{output}"
    );
    assert_eq!(env.ready_count(&topology.jobs_queue()).await, 0);

    let (summary, _) = dlq(&env.settings, &["replay", "--all", "--json"]).await;
    let summary = summary.expect("replay");
    assert_eq!((summary.replayed, summary.skipped), (7, 3));
    let jobs = env.drain(&topology.jobs_queue()).await;
    assert_eq!(jobs.len(), 7);
    for job in &jobs {
        let before = specs[all
            .iter()
            .position(|id| *id == dlq_common::id(job))
            .unwrap()]
        .replays;
        assert_eq!(header_u32(job, message::REPLAYS), Some(before + 1));
    }
    let (_, listed) = dlq(&env.settings, &["list", "--json"]).await;
    let kept: Vec<String> = listed
        .lines()
        .map(|line| {
            let letter: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            letter["message_id"].as_str().expect("an id").to_owned()
        })
        .collect();
    assert_eq!(kept, all[..3], "letters replayed 3 times stay, in order");

    let (summary, _) = dlq(&env.settings, &["replay", "--all", "--force"]).await;
    assert_eq!(summary.expect("forced replay").replayed, 3);
    let jobs = env.drain(&topology.jobs_queue()).await;
    assert_eq!(jobs.len(), 3);
    assert!(
        jobs.iter()
            .all(|j| header_u32(j, message::REPLAYS) == Some(4))
    );
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_rate_bound_a_replay() {
    let env = TestEnv::new().await;
    let topology = env.topology();
    let letters = publish_specs(&env, &two_sources()).await;
    let all = ids_of(&letters, |_| true);

    let started = tokio::time::Instant::now();
    let (summary, output) = dlq(
        &env.settings,
        &[
            "replay", "--all", "--limit", "6", "--rate", "20/s", "--json",
        ],
    )
    .await;
    let summary = summary.expect("replay");
    assert_eq!(summary.replayed, 6);
    let json: serde_json::Value = serde_json::from_str(output.trim()).expect("one JSON summary");
    assert_eq!(json["replayed"], 6);
    // Six evenly spaced replays at 20/s take at least five intervals of 50 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // It stopped after the sixth: the rest was neither read nor moved.
    assert!(
        summary.scanned < 100 && summary.requeued == 0,
        "{summary:?}"
    );

    let jobs = env.drain(&topology.jobs_queue()).await;
    let mut replayed = ids(&jobs);
    replayed.sort();
    let mut first_six = all[..6].to_vec();
    first_six.sort();
    assert_eq!(replayed, first_six);
    assert_eq!(ids(&env.drain(&topology.dead_queue()).await), all[6..]);
}
