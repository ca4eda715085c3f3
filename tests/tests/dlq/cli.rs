//! `hookfleet-worker dlq …` as the binary runs it (parsed by its clap
//! definition, config loaded from a file): the exit codes scripts and the replay
//! Job rely on (0 done, 1 error, 2 usage, 3 nothing matched or not all done,
//! 130 interrupted), the `--all` guard of `replay`, and the commands running
//! with only the broker's settings — no webhook, provider or sink secret set.

use crate::dlq_common::{Spec, dlq_with, publish_specs};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use hookfleet_tests::env::TestEnv;
use hookfleet_worker::cli::{self, Cli};
use hookfleet_worker::dlq::Exit;
use tokio_util::sync::CancellationToken;

/// Secrets referenced from every section, none of them set.
const UNSET_SECRETS: &str = r#"
[ingest.sources.gh]
scheme = "github"
secrets = [{ secret_env = "HF_TEST_UNSET_WEBHOOK_SECRET" }]

[worker.providers.openai]
kind = "openai"
api_key = { secret_env = "HF_TEST_UNSET_OPENAI_KEY" }
"#;

/// One pipeline whose second sink's token is unset.
const UNSET_SINK_TOKEN: &str = r#"
[worker.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:8090/v1"

[[worker.pipelines]]
name = "triage"
provider = "mock"
model = "m"
user = "{{ payload }}"
sinks = [
  { kind = "amqp" },
  { kind = "http", name = "out", url = "https://example.com/hook", auth = { kind = "bearer", token = { secret_env = "HF_TEST_UNSET_OUT_TOKEN" } } },
]
"#;

/// A config file for `namespace` on the test broker, plus `extra`; removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(namespace: &str, extra: &str) -> Self {
        let text = format!(
            "namespace = \"{namespace}\"\n[amqp]\nurl = \"{}\"\n{extra}",
            hookfleet_tests::env::AMQP_URL
        );
        let path = std::env::temp_dir().join(format!("hf-dlq-cli-{}.toml", ulid::Ulid::new()));
        std::fs::write(&path, text).expect("config written");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// `hookfleet-worker --config FILE <args>`, in-process; a command line clap
/// refuses exits as the binary would (2).
async fn worker(config: &ConfigFile, args: &[&str]) -> ExitCode {
    let argv = ["hookfleet-worker", "--config", config.path()]
        .into_iter()
        .chain(args.iter().copied());
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli::run(cli).await,
        Err(e) => ExitCode::from(u8::try_from(e.exit_code()).expect("small exit code")),
    }
}

fn code(n: u8) -> ExitCode {
    ExitCode::from(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_run_with_webhook_provider_and_sink_secrets_unset() {
    let env = TestEnv::new().await;
    publish_specs(&env, &vec![Spec::exhausted("github"); 3]).await;
    let config = ConfigFile::new(
        &env.namespace,
        &format!("{UNSET_SECRETS}{UNSET_SINK_TOKEN}"),
    );

    assert_eq!(worker(&config, &["dlq", "stats"]).await, ExitCode::SUCCESS);
    assert_eq!(
        worker(&config, &["dlq", "list", "--json"]).await,
        ExitCode::SUCCESS
    );
    assert_eq!(env.ready_count(&env.topology().dead_queue()).await, 3);

    // The worker itself still needs every secret, and names the first missing one.
    assert_eq!(worker(&config, &["run"]).await, ExitCode::FAILURE);
    let error = format!(
        "{:#}",
        cli::worker_settings(Some(config.0.as_path())).unwrap_err()
    );
    assert!(error.contains("cannot start the worker"), "{error}");
    // Which unset secret is met first depends on the config crate's map order.
    let named = [
        (
            "`ingest.sources.gh.secrets[0]`",
            "HF_TEST_UNSET_WEBHOOK_SECRET",
        ),
        ("`worker.providers.openai", "HF_TEST_UNSET_OPENAI_KEY"),
        ("`worker.pipelines[0].sinks[1]`", "HF_TEST_UNSET_OUT_TOKEN"),
    ];
    assert!(
        named
            .iter()
            .any(|(field, var)| error.contains(field) && error.contains(var)),
        "{error}"
    );
}

#[tokio::test]
async fn the_worker_names_an_unset_sink_secret_by_its_dotted_path() {
    let config = ConfigFile::new("t-unused", UNSET_SINK_TOKEN);
    let error = format!(
        "{:#}",
        cli::worker_settings(Some(config.0.as_path())).unwrap_err()
    );
    assert!(error.contains("cannot start the worker"), "{error}");
    assert!(error.contains("`worker.pipelines[0].sinks[1]`"), "{error}");
    assert!(
        error.contains("HF_TEST_UNSET_OUT_TOKEN is not set"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_without_a_filter_needs_all() {
    let env = TestEnv::new().await;
    let topology = env.topology();
    publish_specs(&env, &vec![Spec::exhausted("github"); 5]).await;
    let config = ConfigFile::new(&env.namespace, "");

    assert_eq!(worker(&config, &["dlq", "replay"]).await, code(2));
    assert_eq!(
        worker(&config, &["dlq", "replay", "--rate", "50/s"]).await,
        code(2)
    );
    assert_eq!(
        env.ready_count(&topology.dead_queue()).await,
        5,
        "nothing replayed"
    );
    assert_eq!(
        worker(&config, &["dlq", "replay", "--dry-run"]).await,
        code(0)
    );
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 5);

    assert_eq!(worker(&config, &["dlq", "replay", "--all"]).await, code(0));
    assert_eq!(
        env.wait_for_count(&topology.jobs_queue(), 5, Duration::from_secs(10))
            .await,
        5
    );
    assert_eq!(env.ready_count(&topology.dead_queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_done_usage_and_nothing_matched_apart() {
    let env = TestEnv::new().await;
    publish_specs(&env, &vec![Spec::exhausted("github"); 3]).await;
    let config = ConfigFile::new(&env.namespace, "");

    assert_eq!(worker(&config, &["dlq", "stats"]).await, code(0));
    assert_eq!(
        worker(&config, &["dlq", "list", "--source", "nobody"]).await,
        code(0)
    );
    assert_eq!(
        worker(&config, &["dlq", "show", "01JD4QNOSUCHLETTER000000000"]).await,
        code(3)
    );
    assert_eq!(
        worker(&config, &["dlq", "replay", "--source", "nobody"]).await,
        code(3)
    );
    assert_eq!(
        worker(&config, &["dlq", "purge", "--source", "nobody", "--yes"]).await,
        code(3)
    );
    assert_eq!(
        worker(&config, &["dlq", "purge", "--source", "github"]).await,
        code(2)
    );
    assert_eq!(
        worker(&config, &["dlq", "stats", "--event-type", "a[b"]).await,
        code(2)
    );
    assert_eq!(
        worker(&config, &["dlq", "stats", "--no-such-flag"]).await,
        code(2)
    );
    assert_eq!(
        env.ready_count(&env.topology().dead_queue()).await,
        3,
        "nothing changed"
    );

    assert_eq!(
        worker(&config, &["dlq", "purge", "--source", "github", "--yes"]).await,
        code(0)
    );
    assert_eq!(env.ready_count(&env.topology().dead_queue()).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_1_when_the_command_cannot_run() {
    // A namespace whose topology nobody declared: no DLQ.
    let config = ConfigFile::new(
        &format!("t-{}", ulid::Ulid::new().to_string().to_lowercase()),
        "",
    );
    assert_eq!(worker(&config, &["dlq", "stats"]).await, code(1));
    let broken = ConfigFile::new("t-unused", "[amqp.nonsense]\n");
    assert_eq!(worker(&broken, &["dlq", "stats"]).await, code(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_3_when_the_loop_guard_leaves_letters_behind() {
    let env = TestEnv::new().await;
    let mut tired = Spec::exhausted("github");
    tired.replays = 3;
    publish_specs(&env, &[Spec::exhausted("github"), tired]).await;
    let config = ConfigFile::new(&env.namespace, "");

    assert_eq!(worker(&config, &["dlq", "replay", "--all"]).await, code(3));
    assert_eq!(
        env.ready_count(&env.topology().dead_queue()).await,
        1,
        "the tired one stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_replay_exits_130() {
    let env = TestEnv::new().await;
    let topology = env.topology();
    publish_specs(&env, &vec![Spec::exhausted("github"); 20]).await;
    let cancel = CancellationToken::new();
    let replay = {
        let settings = env.settings.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            dlq_with(&settings, &["replay", "--all", "--rate", "10/s"], cancel).await
        })
    };
    env.wait_for_count(&topology.jobs_queue(), 1, Duration::from_secs(20))
        .await;
    cancel.cancel();
    let (result, _) = replay.await.expect("the replay task does not panic");
    let exit = Exit::of(&result);
    assert_eq!(exit, Exit::Interrupted, "{result:?}");
    assert_eq!(exit.code(), 130);
}
