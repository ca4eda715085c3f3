//! A job RabbitMQ dead-lettered itself — redelivered past the jobs queue's
//! `x-delivery-limit` — has no `hf-error*` headers; `dlq` reads its `x-death`,
//! shows it as class `delivery-limit`, and replays it as a fresh job without the
//! broker's headers.
//!
//! The DLQ itself never drops a letter however often read-only passes return
//! it (RabbitMQ 4's default delivery limit of 20), and a DLQ an older release
//! declared without a limit still lets every service start.

use crate::dlq_common;

use std::time::Duration;

use dlq_common::{Spec, dlq, header, header_u32, ids, ids_of, publish_specs};
use hookfleet_common::message;
use hookfleet_common::publisher::Publisher;
use hookfleet_common::topology::DEAD_QUEUE_DELIVERY_LIMIT;
use hookfleet_tests::env::{AMQP_URL, TestEnv};
use hookfleet_tests::fleet::JobPublisher;
use hookfleet_tests::wait::wait_until;
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_rabbitmq_dead_lettered_are_shown_from_x_death_and_replayed() {
    let mut env = TestEnv::new().await;
    // The real topology, with a delivery limit small enough to reach by hand.
    env.topology()
        .delete(env.channel())
        .await
        .expect("delete the default topology");
    env.settings.amqp.delivery_limit = 1;
    let topology = env.topology();
    topology.declare(env.channel()).await.expect("declare");

    let jobs = JobPublisher::new(&env).await;
    let meta = jobs
        .publish("github", "issues", &json!({ "action": "opened" }))
        .await;
    // A crash-looping consumer: take the job and requeue it, again and again.
    // RabbitMQ dead-letters it past the limit.
    wait_until(Duration::from_secs(20), || async {
        if env.ready_count(&topology.dead_queue()).await > 0 {
            return true;
        }
        if let Some(got) = env
            .channel()
            .basic_get(topology.jobs_queue().into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            got.delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
                .expect("nack");
        }
        false
    })
    .await;

    let (shown, text) = dlq(&env.settings, &["show", &meta.message_id]).await;
    shown.expect("show finds it");
    assert!(text.contains("delivery-limit"), "{text}");
    assert!(text.contains(&topology.jobs_queue()), "{text}");
    assert!(text.contains("x-death"), "{text}");

    let (_, json_text) = dlq(&env.settings, &["show", &meta.message_id, "--json"]).await;
    let shown: serde_json::Value = serde_json::from_str(&json_text).expect("JSON");
    let letter = &shown["letter"];
    assert_eq!(letter["class"], "delivery-limit");
    assert_eq!(letter["reason"], "delivery_limit");
    assert_eq!(letter["source"], "github");
    assert_eq!(letter["death"]["reason"], "delivery_limit");
    assert_eq!(letter["death"]["queue"], topology.jobs_queue());
    assert_eq!(letter["death"]["routing_keys"][0], "github.issues");
    assert!(
        letter["failed_at"].is_string(),
        "dated from x-death: {letter}"
    );
    assert!(
        shown["headers"]["hf-error"].is_null(),
        "no hf-error of ours"
    );
    assert_eq!(shown["body"], r#"{"action":"opened"}"#);

    let (stats, stats_text) = dlq(&env.settings, &["stats", "--json"]).await;
    stats.expect("stats");
    let stats: serde_json::Value = serde_json::from_str(&stats_text).expect("JSON");
    assert_eq!(stats["by_class"]["delivery-limit"], 1);
    assert_eq!(stats["by_reason"]["delivery_limit"], 1);

    let (listed, list_text) = dlq(
        &env.settings,
        &["list", "--class", "delivery-limit", "--json"],
    )
    .await;
    assert_eq!(listed.expect("list").matched, 1);
    assert_eq!(list_text.lines().count(), 1, "{list_text}");

    let (replayed, _) = dlq(&env.settings, &["replay", "--class", "delivery-limit"]).await;
    assert_eq!(replayed.expect("replay").replayed, 1);
    let job = env.drain(&topology.jobs_queue()).await;
    assert_eq!(job.len(), 1);
    let job = &job[0];
    assert_eq!(dlq_common::id(job), meta.message_id);
    assert_eq!(job.delivery.data, br#"{"action":"opened"}"#);
    assert_eq!(header_u32(job, message::ATTEMPT), Some(0));
    assert_eq!(header_u32(job, message::REPLAYS), Some(1));
    for broker_header in ["x-death", "x-first-death-reason"] {
        assert!(
            header(job, broker_header).is_none(),
            "{broker_header} removed"
        );
    }
    // The jobs queue (it has a delivery limit) stamps its own count on every
    // delivery; a replayed job starts from zero again.
    assert!(
        matches!(header_u32(job, "x-delivery-count"), None | Some(0)),
        "{:?}",
        header(job, "x-delivery-count")
    );
    let last = dlq_common::header(job, "hf-last-error").expect("hf-last-error");
    let last = match last {
        lapin::types::AMQPValue::LongString(s) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => panic!("{other:?}"),
    };
    assert!(last.starts_with("delivery-limit: delivery_limit"), "{last}");
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 0);
    jobs.close().await;
}

/// `{ns}.dead`'s arguments as the test environment declares them, with a
/// delivery limit or without one (as releases before it did).
fn dead_queue_args(limit: Option<i64>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-expires".into(), AMQPValue::LongLongInt(600_000));
    if let Some(limit) = limit {
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(limit));
    }
    args
}

/// Declares `queue` on a throwaway channel (a refusal closes the channel).
async fn declare_queue(queue: &str, args: FieldTable) -> Result<(), lapin::Error> {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel.queue_declare(queue.into(), options, args).await;
    let _ = connection.close(200, "done".into()).await;
    declared.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_list_passes_over_a_five_letter_dlq_keep_all_five() {
    let env = TestEnv::new().await;
    let dead = env.topology().dead_queue();
    let published = ids_of(
        &publish_specs(&env, &vec![Spec::exhausted("github"); 5]).await,
        |_| true,
    );

    // Each pass reads every letter and returns it to the queue: on RabbitMQ
    // 4.0-4.2 each return counts toward the delivery limit, which defaults to 20
    // and drops letters of a queue without a dead-letter exchange past it.
    for pass in 0..30 {
        let (listed, _) = dlq(&env.settings, &["list", "--json", "--no-progress"]).await;
        assert_eq!(listed.expect("list").matched, 5, "pass {pass}");
        assert_eq!(env.ready_count(&dead).await, 5, "after pass {pass}");
    }
    // The DLQ carries a delivery limit of its own, out of reach of any number
    // of passes: a re-declaration with it is accepted (a 406 otherwise).
    declare_queue(&dead, dead_queue_args(Some(DEAD_QUEUE_DELIVERY_LIMIT)))
        .await
        .expect("the DLQ was declared with the large delivery limit");

    let letters = env.drain(&dead).await;
    assert_eq!(ids(&letters), published, "all five, in order");
    // RabbitMQ counted every return (here, 3.10: it stamps the count once the
    // queue has a limit), well past 4.0's default limit of 20.
    for letter in &letters {
        let returned = header_u32(letter, "x-delivery-count");
        assert!(returned >= Some(30), "returns counted: {returned:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_an_older_release_declared_without_a_limit_is_kept_as_it_is() {
    let env = TestEnv::new().await;
    let topology = env.topology();
    topology
        .delete(env.channel())
        .await
        .expect("delete the default topology");
    declare_queue(&topology.dead_queue(), dead_queue_args(None))
        .await
        .expect("the old DLQ");

    // What every service does at start (the worker's consumer likewise).
    let publisher = Publisher::new(&env.settings.amqp, "test-upgrade", Some(topology.clone()));
    publisher
        .connect()
        .await
        .expect("the topology declares around the old DLQ");
    publisher.close().await;
    assert_eq!(env.ready_count(&topology.jobs_queue()).await, 0, "declared");
    declare_queue(&topology.dead_queue(), dead_queue_args(None))
        .await
        .expect("the old DLQ is unchanged");
}
