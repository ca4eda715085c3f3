//! `make bench`, shrunk to a few seconds, so the benchmark never rots: every
//! scenario of the suite runs against the real binaries (each in its own
//! `TestEnv` namespace) and the report renders. It asserts the accounting —
//! every 202 landed, every job got its result — never a timing.

use hookfleet_common::signature::SchemeKind;
use hookfleet_tests::app::TestApp;
use hookfleet_tests::bench::floor::{self, FloorParams};
use hookfleet_tests::bench::procs::Lab;
use hookfleet_tests::bench::report::{self, Host};
use hookfleet_tests::bench::suite::{self, SuiteParams};
use hookfleet_tests::loadgen::{self, Mode, Scheme, Stop, Target};
use hookfleet_tests::spawn;
use hookfleet_tests::webhook::{self, source};

/// How long the shrunk suite may take before the test fails (see its use).
const SUITE_LIMIT: std::time::Duration = std::time::Duration::from_secs(150);

/// A lab of freshly built `binaries` and a work directory of its own (the
/// caller removes it).
fn lab(binaries: &[&str], name: &str) -> (Lab, std::path::PathBuf) {
    let built: Vec<_> = binaries.iter().map(|b| spawn::binary(b)).collect();
    let bin_dir = built[0].parent().expect("the binaries' directory");
    let work_dir =
        std::env::temp_dir().join(format!("hookfleet-bench-{name}-{}", ulid::Ulid::new()));
    (Lab::new(bin_dir, &work_dir), work_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_suite_runs_and_accounts_for_every_message() {
    let (lab, work_dir) = lab(
        &["hookfleet-ingest", "hookfleet-worker", "mock-ai"],
        "smoke",
    );
    let params = SuiteParams::smoke();

    // Normally 15-20 s. Once, in CI, a consume ceiling's `basic.qos` was never
    // answered (channel open, no prefetch set, no consumer) and the test waited
    // for ever: bound it, so such a hang fails with its logs' place instead.
    let suite = tokio::time::timeout(SUITE_LIMIT, suite::run(&lab, &params))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the smoke suite did not finish within {SUITE_LIMIT:?} (logs in {})",
                work_dir.display()
            )
        })
        .expect("the suite runs");

    for run in &suite.publish {
        assert_eq!(
            run.messages, params.publish.messages,
            "every publish landed"
        );
    }
    for run in suite.consume.iter().chain(&suite.relay) {
        assert!(run.messages > 0 && run.per_second > 0.0);
    }
    for run in &suite.ingest {
        assert!(
            run.load.accepted > 0,
            "ingest accepted requests: {:?}",
            run.load
        );
        assert_eq!(
            run.load.accepted, run.load.sent,
            "every request answered 202"
        );
        assert_eq!(run.landed, run.load.accepted, "each 202 is one message");
        assert!(run.peak_rss_kib > 0, "peak RSS read");
    }
    for (run, expected) in suite
        .worker_fast
        .iter()
        .map(|r| (r, params.worker_fast.jobs))
        .chain(
            suite
                .worker_slow
                .iter()
                .map(|r| (r, params.worker_slow.jobs)),
        )
    {
        assert_eq!(run.jobs, expected, "the worker processed every job");
        assert!(run.peak_rss_kib > 0, "peak RSS read");
    }
    let growth = &suite.growth;
    assert_eq!(
        growth.fleet.iter().map(|p| p.processes).collect::<Vec<_>>(),
        params.growth.fleet,
        "every fleet size ran"
    );
    for point in &growth.fleet {
        let [run] = &point.runs[..] else {
            panic!("one run of {} processes", point.processes)
        };
        assert_eq!(run.processes, point.processes);
        assert_eq!(
            run.jobs,
            params.growth.messages_at(1024),
            "every job processed"
        );
    }
    assert_eq!(growth.depths.len(), params.growth.depths.len());
    for point in &growth.depths {
        assert_eq!(point.ceiling.len(), 1);
        let [run] = &point.ingest[..] else {
            panic!("one ingest run at depth {}", point.depth)
        };
        assert!(run.load.accepted > 0 && run.landed == run.load.accepted);
    }
    assert_eq!(
        growth.sizes.iter().map(|p| p.bytes).collect::<Vec<_>>(),
        params.growth.sizes,
        "every size ran"
    );
    for point in &growth.sizes {
        let jobs = params.growth.messages_at(point.bytes);
        assert_eq!(point.publish[0].messages, jobs);
        assert_eq!(point.relay[0].messages, jobs);
        assert_eq!(point.worker[0].jobs, jobs);
        let ingest = &point.ingest[0];
        assert!(ingest.load.accepted > 0, "{} B accepted", point.bytes);
        assert_eq!(ingest.landed, ingest.load.accepted);
    }
    assert_eq!(suite.e2e.len(), 1);
    let probes = &suite.capacity_probes;
    assert!(!probes.is_empty() && probes.len() <= 1 + params.capacity_steps);
    assert_eq!(probes[0].rate, suite.capacity_estimate.round());
    // The capacity is the highest rate a probe kept up with, else what the
    // last one delivered.
    let kept = probes
        .iter()
        .filter(|p| suite::kept_up(p))
        .map(|p| p.rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let last = probes.last().unwrap();
    assert_eq!(
        suite.capacity,
        kept.unwrap_or(last.delivered_per_second.min(last.rate))
    );
    assert!(
        suite.capacity > 0.0 && suite.capacity <= suite.capacity_estimate.round(),
        "capacity {} of estimate {}",
        suite.capacity,
        suite.capacity_estimate
    );
    assert_eq!(
        suite.e2e[0].rate,
        (suite.capacity * params.e2e_load).max(1.0).round()
    );
    for run in suite.e2e.iter().chain(probes) {
        assert!(run.load.accepted > 0);
        assert_eq!(run.results, run.load.accepted, "one result per 202");
    }

    let text = report::render(&suite, &params, &Host::detect(), Some("## Notes\n"));
    for section in [
        "## Targets",
        "## a.",
        "## b.",
        "## c.",
        "## d.",
        "## e.",
        "## g. How cost grows",
        "### Worker processes against one broker",
        "### Ingest by connections",
        "### Message size",
        "## Notes",
        "The capacity, ",
    ] {
        assert!(text.contains(section), "the report has {section}");
    }
    assert!(
        text.contains("bench publish --messages"),
        "commands are quoted"
    );
    for target in [
        "ingest CPU per request",
        "worker CPU per job",
        "vs publish ceiling at 16 in flight",
        "worst of 1 runs",
    ] {
        assert!(text.contains(target), "the targets table has {target}");
    }
    let _ = std::fs::remove_dir_all(&work_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_signs_both_schemes_in_both_loops_and_every_202_lands() {
    let standard = webhook::standard_secret();
    let stripe = webhook::plain_secret();
    let mut app = TestApp::builder()
        .workers(0)
        .ingest()
        .source("support", source(SchemeKind::Standard, &[&standard]))
        .source("stripe", source(SchemeKind::Stripe, &[&stripe]))
        .start()
        .await;
    let (env, ingest) = (app.env(), app.ingest());

    let runs = [
        (
            "support",
            Scheme::Standard,
            &standard,
            Mode::Closed { concurrency: 8 },
        ),
        (
            "stripe",
            Scheme::Stripe,
            &stripe,
            Mode::Open {
                rate: 400.0,
                max_in_flight: 64,
            },
        ),
    ];
    let mut accepted = 0;
    for (name, scheme, secret, mode) in runs {
        let target = Target {
            url: ingest.hook_url(name),
            scheme,
            secret: secret.clone(),
            body_bytes: 1024,
        };
        let report = loadgen::run(target, mode, Stop::Count(100)).await;
        assert_eq!(report.sent, 100);
        assert_eq!(
            report.accepted, 100,
            "{name}: every request accepted: {report:?}"
        );
        assert!(report.p50_ms > 0.0 && report.p50_ms <= report.p999_ms);
        accepted += report.accepted;
    }
    let landed = loadgen::queue_depth(&env.settings.amqp.url, &env.topology().jobs_queue())
        .await
        .expect("passive declare");
    assert_eq!(u64::from(landed), accepted, "one message per 202");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floors_run_and_account_for_every_message() {
    let (lab, work_dir) = lab(&["hookfleet-ingest", "mock-ai", "bench"], "floor");
    let params = FloorParams {
        concurrency: 8,
        deep_concurrency: 16,
        publish_messages: 500,
        duration: std::time::Duration::from_secs(1),
        jobs: 300,
        prefetch: 16,
        body_bytes: 1024,
    };
    // `rounds` fails unless every 202 landed and every job has its one result.
    let rounds = tokio::time::timeout(SUITE_LIMIT, floor::rounds(&lab, &params, 1))
        .await
        .expect("the floors finish")
        .expect("the floors run");
    let [round] = &rounds[..] else {
        panic!("one round")
    };
    assert_eq!(round.publish.messages, 500);
    assert_eq!(round.publish_deep.messages, 500);
    for run in [&round.ingest, &round.ingest_shipped, &round.ingest_deep] {
        assert!(run.load.accepted > 0, "{:?}", run.load);
        assert_eq!(run.load.accepted, run.load.sent);
        for process in ["floor", "loadgen", "rabbitmq", "redis"] {
            assert!(
                run.cpu.of(process).is_some(),
                "the ingest floor's CPU lists {process}"
            );
        }
    }
    assert_eq!(
        (
            round.relay.messages,
            round.worker.messages,
            round.worker_shipped.messages
        ),
        (300, 300, 300)
    );
    let text = floor::section(&rounds, &params, "bench floor");
    assert!(
        text.contains("| **median** |")
            && text.contains("÷ c′")
            && text.contains("shipped floor at 16"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&work_dir);
}
