//! `dlq stats`, `list` and `show` read the DLQ without changing it (content and
//! order), honour every filter, and `purge` deletes only what matches — and
//! only with `--yes`.

use crate::dlq_common;

use std::time::Duration;

use dlq_common::{Spec, dead_letter, dlq, ids, ids_of, publish_letters, publish_specs};
use hookfleet_common::message::{self, put_str};
use hookfleet_tests::env::TestEnv;
use hookfleet_worker::dlq::DlqError;
use lapin::BasicProperties;
use lapin::types::FieldTable;

/// 6 github `exhausted` letters from 2 h ago, 4 stripe `permanent` ones from 5
/// min ago, interleaved, then a poison letter without id or source.
async fn mixed_queue(env: &TestEnv) -> Vec<String> {
    let old_github = Spec {
        failed_ago: Duration::from_secs(7200),
        event_type: "issues",
        ..Spec::exhausted("github")
    };
    let new_stripe = Spec {
        class: "permanent",
        error: "ai_http_400: invalid model",
        event_type: "invoice.paid",
        failed_ago: Duration::from_secs(300),
        ..Spec::exhausted("stripe")
    };
    let specs: Vec<Spec> = (0..10)
        .map(|i| {
            if i % 5 < 3 {
                old_github.clone()
            } else {
                new_stripe.clone()
            }
        })
        .collect();
    let mut letters: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(n, spec)| dead_letter(spec, n))
        .collect();
    let mut poison = FieldTable::default();
    put_str(
        &mut poison,
        message::ERROR,
        "no_message_id: the message has no id",
    );
    put_str(&mut poison, message::ERROR_CLASS, "poison");
    put_str(&mut poison, message::STAGE, "decode");
    put_str(&mut poison, message::FAILED_AT, &message::now_rfc3339());
    letters.push((
        BasicProperties::default().with_headers(poison),
        vec![0xff, 0xfe, b'x'],
    ));
    ids_of(&publish_letters(env, letters).await, |_| true)
}

/// The message ids of `list --json` output.
fn listed(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|line| {
            let letter: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            letter["message_id"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

async fn list(env: &TestEnv, args: &[&str]) -> Vec<String> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    let (summary, output) = dlq(&env.settings, &all).await;
    summary.expect("list");
    listed(&output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_list_and_show_filter_and_change_nothing() {
    let env = TestEnv::new().await;
    let all = mixed_queue(&env).await;
    let github: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 < 3 && *i < 10)
        .map(|(_, id)| id.clone())
        .collect();
    let stripe: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 >= 3 && *i < 10)
        .map(|(_, id)| id.clone())
        .collect();

    let (summary, output) = dlq(&env.settings, &["stats", "--json"]).await;
    assert_eq!(summary.expect("stats").matched, 11);
    let stats: serde_json::Value = serde_json::from_str(&output).expect("JSON");
    assert_eq!(stats["by_class"]["exhausted"], 6);
    assert_eq!(stats["by_class"]["permanent"], 4);
    assert_eq!(stats["by_class"]["poison"], 1);
    assert_eq!(stats["by_reason"]["ai_http_500"], 6);
    assert_eq!(stats["by_reason"]["no_message_id"], 1);
    assert_eq!(stats["by_source"]["github"], 6);
    assert_eq!(stats["by_source"]["-"], 1);

    let (summary, text) = dlq(&env.settings, &["stats", "--source", "stripe"]).await;
    assert_eq!(summary.expect("stats").matched, 4);
    assert!(text.contains("4 of 11 dead letters match"), "{text}");
    assert!(text.contains("ai_http_400"), "{text}");

    assert_eq!(list(&env, &["--class", "permanent"]).await, stripe);
    assert_eq!(list(&env, &["--older-than", "1h"]).await, github);
    assert_eq!(list(&env, &["--error", "INVALID MODEL"]).await, stripe);
    assert_eq!(list(&env, &["--event-type", "inv*"]).await, stripe);
    assert_eq!(list(&env, &["--stage", "decode"]).await, [""]);
    let recent = list(&env, &["--newer-than", "10m"]).await;
    assert_eq!(recent.len(), 5, "stripe and the poison letter: {recent:?}");
    assert_eq!(list(&env, &["--limit", "3"]).await, all[..3]);
    assert_eq!(
        list(&env, &["--source", "github", "--id", &github[1]]).await,
        [github[1].clone()]
    );

    let (summary, table) = dlq(&env.settings, &["list"]).await;
    assert_eq!(summary.expect("list").matched, 11);
    assert!(table.starts_with("MESSAGE ID"), "{table}");
    assert!(
        table.contains("11 shown of 11 dead letters scanned"),
        "{table}"
    );

    let (shown, text) = dlq(&env.settings, &["show", &stripe[0]]).await;
    shown.expect("show");
    assert!(text.contains("ai_http_400: invalid model"), "{text}");
    assert!(text.contains("invoice.paid"), "{text}");
    assert!(text.contains(r#""source":"stripe""#), "the body: {text}");
    let (missing, _) = dlq(&env.settings, &["show", "01NOTTHERE"]).await;
    assert!(matches!(missing, Err(DlqError::NotFound(_))), "{missing:?}");

    // A window smaller than the queue: read in one full pass, order kept.
    assert_eq!(list(&env, &["--limit", "0", "--hold", "2"]).await.len(), 11);

    let dead = env.drain(&env.topology().dead_queue()).await;
    assert_eq!(ids(&dead), all, "reading changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_needs_yes_and_deletes_only_what_matches() {
    let env = TestEnv::new().await;
    let all = mixed_queue(&env).await;
    let dead_queue = env.topology().dead_queue();

    let (refused, preview) = dlq(&env.settings, &["purge", "--class", "permanent"]).await;
    assert!(
        matches!(refused, Err(DlqError::NotConfirmed(4))),
        "{refused:?}"
    );
    assert!(
        preview.contains("4 dead letters would be purged"),
        "{preview}"
    );
    assert_eq!(env.ready_count(&dead_queue).await, 11, "nothing deleted");

    let (purged, output) = dlq(
        &env.settings,
        &["purge", "--class", "permanent", "--yes", "--hold", "3"],
    )
    .await;
    let purged = purged.expect("purge");
    assert_eq!((purged.matched, purged.purged), (4, 4));
    assert!(output.contains("Purged 4 dead letters"), "{output}");

    let left = ids(&env.drain(&dead_queue).await);
    let expected: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 10 || i % 5 < 3)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(left, expected, "the others stay, in order");

    publish_specs(&env, &vec![Spec::exhausted("github"); 5]).await;
    let (purged, _) = dlq(&env.settings, &["purge", "--yes", "--limit", "2", "--json"]).await;
    assert_eq!(purged.expect("purge").purged, 2);
    assert_eq!(env.ready_count(&dead_queue).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_and_list_survive_absurd_timestamps_in_a_foreign_letter() {
    use lapin::types::{AMQPValue, FieldArray};
    let env = TestEnv::new().await;
    let (properties, body) = dead_letter(&Spec::exhausted("support"), 0);
    let mut headers = properties.headers().clone().unwrap_or_default();
    // Past what RFC 3339 can write (year 10000), and past what time can hold.
    headers.insert("x-foreign-at".into(), AMQPValue::Timestamp(253_402_300_800));
    let mut death = FieldTable::default();
    death.insert("reason".into(), AMQPValue::LongString("rejected".into()));
    death.insert("queue".into(), AMQPValue::LongString("elsewhere".into()));
    death.insert("count".into(), AMQPValue::LongLongInt(1));
    death.insert("time".into(), AMQPValue::Timestamp(u64::MAX));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    let properties = properties.with_headers(headers).with_timestamp(u64::MAX);
    let published = publish_letters(&env, vec![(properties, body)]).await;
    let id = published[0].id.clone();

    let (shown, text) = dlq(&env.settings, &["show", &id]).await;
    shown.expect("show");
    assert!(text.contains("not a valid time"), "{text}");
    let (shown, json) = dlq(&env.settings, &["show", &id, "--json"]).await;
    shown.expect("show --json");
    assert!(json.contains("not a valid time"), "{json}");
    let (listed, _) = dlq(&env.settings, &["list"]).await;
    assert_eq!(listed.expect("list").matched, 1);
    let (stats, _) = dlq(&env.settings, &["stats"]).await;
    stats.expect("stats");
}
