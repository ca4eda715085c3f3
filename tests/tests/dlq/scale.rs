//! Scale: a DLQ of 100,000 letters is read and replayed in bounded memory (the
//! pass never holds more than its prefetch window unacked). Ignored by default:
//! they take a minute. `bench/dlq.sh` measures the release binary the same way.
//!
//! ```text
//! cargo test -p hookfleet-tests --test dlq -- scale:: --ignored --nocapture
//! ```

use crate::dlq_common;

use std::time::{Duration, Instant};

use dlq_common::{Spec, dead_letter, dlq};
use hookfleet_common::topology::Topology;
use hookfleet_tests::env::{AMQP_URL, TestEnv};
use hookfleet_tests::settings::Settings;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Confirmation, Connection, ConnectionProperties};

/// Letters to fill (`DLQ_SCALE_COUNT`, default 100,000).
fn count() -> usize {
    std::env::var("DLQ_SCALE_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

/// Fills `{ns}.dead` with `n` letters of ~1 KiB, sources `github`/`stripe`
/// alternating, generated and confirmed 1,024 at a time (never all in memory).
async fn fill(settings: &Settings, n: usize) {
    let connection = Connection::connect(&settings.amqp.url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let exchange = Topology::new(&settings.namespace, &settings.amqp).dead_exchange();
    let padding = "x".repeat(900);
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(1024);
        let mut confirms = Vec::with_capacity(batch);
        for i in done..done + batch {
            let source = if i % 2 == 0 { "github" } else { "stripe" };
            let (properties, mut body) = dead_letter(&Spec::exhausted(source), i);
            body.truncate(body.len() - 1);
            body.extend_from_slice(format!(r#","pad":"{padding}"}}"#).as_bytes());
            confirms.push(
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        "dead".into(),
                        BasicPublishOptions::default(),
                        &body,
                        properties,
                    )
                    .await
                    .expect("publish"),
            );
        }
        for confirm in futures::future::join_all(confirms).await {
            assert!(matches!(confirm.expect("confirm"), Confirmation::Ack(None)));
        }
        done += batch;
    }
    let _ = connection.close(200, "filled".into()).await;
}

/// Peak resident memory of this process since the last reset, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Current resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Resets the peak (`VmHWM`) to the current RSS (Linux: `5` > clear_refs).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fills a DLQ of 100,000 letters; run with --ignored"]
async fn a_dead_letter_queue_of_100k_is_listed_and_replayed_in_bounded_memory() {
    let env = TestEnv::new().await;
    let topology = env.topology();
    let n = count();
    let started = Instant::now();
    fill(&env.settings, n).await;
    println!("filled {n} letters in {:?}", started.elapsed());
    assert_eq!(env.ready_count(&topology.dead_queue()).await as usize, n);

    let mut report = Vec::new();
    for args in [
        vec!["stats", "--json"],
        vec!["list", "--limit", "0", "--json"],
        vec!["replay", "--source", "github", "--json"],
        vec!["replay", "--all", "--json"],
    ] {
        reset_peak();
        let before = rss_kib();
        let started = Instant::now();
        let (summary, output) = dlq(&env.settings, &args).await;
        let elapsed = started.elapsed();
        let summary = summary.expect("the command succeeds");
        let growth = peak_rss_kib().saturating_sub(before);
        let rate = summary.scanned as f64 / elapsed.as_secs_f64();
        report.push(format!(
            "{:<32} scanned {:>7} replayed {:>7} put back {:>7}  {:>6.1} s  {:>7.0} letters/s  peak RSS +{} MiB (output {} MiB)",
            args.join(" "),
            summary.scanned,
            summary.replayed,
            summary.requeued,
            elapsed.as_secs_f64(),
            rate,
            growth / 1024,
            output.len() / (1024 * 1024),
        ));
        // The in-memory output of `list` is the test's, not the command's.
        let bound = 150 * 1024 + (output.len() as u64 / 1024) * 2;
        assert!(
            growth < bound,
            "{}: peak RSS grew {growth} KiB",
            args.join(" ")
        );
    }
    for line in &report {
        println!("{line}");
    }
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 0);
    env.wait_for_count(&topology.jobs_queue(), n as u32, Duration::from_secs(10))
        .await;
}

/// `bench/dlq.sh` fills a DLQ with this, then measures the release binary.
/// `DLQ_BENCH_NAMESPACE` names the namespace (its topology is declared here,
/// with queues expiring an hour after last use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper of bench/dlq.sh"]
async fn fill_a_dead_letter_queue_for_the_bench() {
    let Ok(namespace) = std::env::var("DLQ_BENCH_NAMESPACE") else {
        panic!("set DLQ_BENCH_NAMESPACE");
    };
    let mut settings = Settings {
        namespace,
        ..Settings::default()
    };
    settings.amqp.url = std::env::var("DLQ_BENCH_AMQP_URL").unwrap_or_else(|_| AMQP_URL.into());
    settings.amqp.queue_expires = Some(Duration::from_secs(3600));
    let connection = Connection::connect(&settings.amqp.url, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    Topology::new(&settings.namespace, &settings.amqp)
        .declare(&channel)
        .await
        .expect("declare");
    let started = Instant::now();
    fill(&settings, count()).await;
    println!("filled {} letters in {:?}", count(), started.elapsed());
}

/// The web console's DLQ page on a queue of 100,000 letters: the first page
/// answers within a second and memory does not grow with the queue (a page
/// reads from the head and stops at its end). `bench/console.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fills a DLQ of 100,000 letters; run with --ignored"]
async fn the_console_answers_the_first_dlq_page_of_100k_letters_within_a_second() {
    let env = TestEnv::new().await;
    let n = count();
    let started = Instant::now();
    fill(&env.settings, n).await;
    println!("filled {n} letters in {:?}", started.elapsed());
    let token = hookfleet_tests::console::fresh_token();
    let mut settings = hookfleet_tests::fleet::worker_settings(&env, 3);
    hookfleet_tests::console::enable(&mut settings, &token);
    let worker = hookfleet_tests::fleet::WorkerHandle::start(settings).await;
    let operator = hookfleet_tests::console::ConsoleClient::new(&worker.admin_url, &token);
    for (label, path) in [
        ("first page", "/console/dlq"),
        ("first page again", "/console/dlq"),
        ("page 3", "/console/dlq?page=2"),
        ("half match", "/console/dlq?source=stripe"),
        ("nothing matches (scan limit)", "/console/dlq?source=nobody"),
    ] {
        reset_peak();
        let before = rss_kib();
        let started = Instant::now();
        let page = operator.get(path).await;
        let elapsed = started.elapsed();
        let growth = peak_rss_kib().saturating_sub(before);
        assert_eq!(page.status, reqwest::StatusCode::OK, "{}", page.html);
        let rows = page.html.matches("class=\"letter\"").count();
        println!(
            "{label:<30} {rows:>3} rows  {:>6.0} ms  peak RSS +{} KiB",
            elapsed.as_secs_f64() * 1000.0,
            growth
        );
        if label.starts_with("first page") {
            assert_eq!(rows, 50);
            assert!(elapsed < Duration::from_secs(1), "{label}: {elapsed:?}");
        }
        // 100,000 letters are ~100 MiB: a page must not come near that. The
        // first request also pays one-time start-up (connections, allocator
        // arenas: ~20 MiB measured), so it is timed but not weighed.
        if label != "first page" {
            assert!(growth < 16 * 1024, "{label}: peak RSS grew {growth} KiB");
        }
    }
    assert_eq!(
        env.ready_count(&env.topology().dead_queue()).await as usize,
        n,
        "reading pages changed nothing"
    );
}
