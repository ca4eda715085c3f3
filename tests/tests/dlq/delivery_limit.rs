//! A job RabbitMQ dead-lettered itself — redelivered past the jobs queue's
//! `x-delivery-limit` — has no `hf-error*` headers; `dlq` reads its `x-death`,
//! shows it as class `delivery-limit`, and replays it as a fresh job without the
//! broker's headers.

use crate::dlq_common;

use std::time::Duration;

use dlq_common::{dlq, header, header_u32};
use hookfleet_common::message;
use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::JobPublisher;
use lapin::options::{BasicGetOptions, BasicNackOptions};
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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while env.ready_count(&topology.dead_queue()).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "RabbitMQ dead-letters it"
        );
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
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

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
    env.cleanup().await;
}
