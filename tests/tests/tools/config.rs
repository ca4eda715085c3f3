//! Loading `hookfleet.toml`: layers, secrets, redaction, the fields each
//! service checks at start, and that every shipped config loads.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use hookfleet_common::config::{ConfigError, FailMode, Sources};
use hookfleet_tests::settings::Settings;
use hookfleet_worker::config::Settings as WorkerSettings;

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn load(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_from(Sources {
        file: None,
        toml: Some(toml.to_owned()),
        env: env(vars),
    })
}

#[test]
fn defaults_load_without_any_file() {
    let s = load("", &[]).unwrap();
    assert_eq!(s.namespace, "hookfleet");
    assert_eq!(s.amqp.retry_tiers.len(), 4);
    assert_eq!(s.ingest.dedup_ttl, Duration::from_secs(86400));
    assert_eq!(s.ingest.redis_failure, FailMode::Open);
}

#[test]
fn environment_overrides_the_file() {
    let s = load(
        "namespace = \"from-file\"\n[amqp]\nconfirm_timeout = \"2s\"\n",
        &[
            ("HOOKFLEET__NAMESPACE", "from-env"),
            ("HOOKFLEET__AMQP__RETRY_TIERS", "100ms,2s"),
            ("HOOKFLEET__WORKER__CONCURRENCY", "7"),
        ],
    )
    .unwrap();
    assert_eq!(s.namespace, "from-env");
    assert_eq!(s.amqp.confirm_timeout, Duration::from_secs(2));
    assert_eq!(
        s.amqp.retry_tiers,
        vec![Duration::from_millis(100), Duration::from_secs(2)]
    );
    assert_eq!(s.worker.concurrency, 7);
}

#[test]
fn secrets_resolve_from_env_and_file_and_are_redacted() {
    let mut file = tempfile();
    writeln!(file.1, "file-secret-value").unwrap();
    let toml = format!(
        r#"
[ingest.sources.gh]
scheme = "github"
secrets = [{{ secret_env = "PATH" }}, {{ secret_file = "{}" }}]
"#,
        file.0.display()
    );
    let s = load(&toml, &[]).unwrap();
    let source = &s.ingest.sources["gh"];
    assert_eq!(source.secrets[1].expose(), "file-secret-value");
    assert!(!source.secrets[0].expose().is_empty());
    let debug = format!("{s:?}");
    assert!(!debug.contains("file-secret-value"), "{debug}");
    assert!(debug.contains("REDACTED"));
    std::fs::remove_file(file.0).ok();
}

#[test]
fn urls_with_passwords_are_redacted_in_debug() {
    let s = load(
        "[amqp]\nurl = \"amqp://user:hunter2@rabbit:5672/%2f\"\n[redis]\nurl = \"redis://:hunter3@redis:6379/0\"\n",
        &[],
    )
    .unwrap();
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("hunter3"),
        "{debug}"
    );
    assert!(debug.contains("amqp://user:***@rabbit:5672/%2f"));
}

fn error_of(toml: &str, vars: &[(&str, &str)]) -> String {
    load(toml, vars).unwrap_err().to_string()
}

#[test]
fn trusted_proxies_come_from_the_environment_as_a_list() {
    let s = load(
        "",
        &[(
            "HOOKFLEET__INGEST__TRUSTED_PROXIES",
            "10.0.0.0/8,192.168.0.1",
        )],
    )
    .unwrap();
    assert_eq!(s.ingest.trusted_networks().len(), 2);
    assert!(
        s.ingest.status_token.is_none(),
        "the status API is off by default"
    );
}

#[test]
fn invalid_configs_fail_naming_the_field() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("namespace = \"bad name!\"", &[], "namespace"),
        ("[amqp]\nurl = \"http://x\"", &[], "amqp.url"),
        ("[amqp]\nconfirm_timeout = \"soon\"", &[], "confirm_timeout"),
        ("[amqp]\nretry_tiers = []", &[], "amqp.retry_tiers"),
        ("[redis]\npool_size = 0", &[], "redis.pool_size"),
        ("[worker]\nconcurrency = 0", &[], "worker.concurrency"),
        ("[ingest]\nlisten = \"nowhere\"", &[], "listen"),
        ("[ingest]\nlsten = \"0.0.0.0:1\"", &[], "lsten"),
        (
            "[ingest]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy\"]",
            &[],
            "ingest.trusted_proxies[1]",
        ),
        (
            "[ingest]\nmax_header_bytes = 100",
            &[],
            "ingest.max_header_bytes",
        ),
        ("[ingest]\nmax_in_flight = 0", &[], "ingest.max_in_flight"),
        (
            "[ingest]\nlisten = \"0.0.0.0:1\"\nadmin_listen = \"0.0.0.0:1\"",
            &[],
            "ingest.admin_listen",
        ),
        (
            "[ingest]\nstatus_listener = \"lobby\"",
            &[],
            "status_listener",
        ),
        (
            "[ingest.sources.s]\nscheme = \"stripe\"\nsecrets = []",
            &[],
            "ingest.sources.s.secrets",
        ),
        (
            "[ingest.sources.s]\nscheme = \"carrier-pigeon\"\nsecrets = [{ secret_env = \"PATH\" }]",
            &[],
            "scheme",
        ),
        (
            "[ingest.sources.s]\nscheme = \"hmac\"\nsecrets = [{ secret_env = \"PATH\" }]",
            &[],
            "ingest.sources.s.hmac",
        ),
        (
            "[ingest.sources.s]\nscheme = \"github\"\nsecrets = [{ secret_env = \"HOOKFLEET_TEST_UNSET_VARIABLE\" }]",
            &[],
            "HOOKFLEET_TEST_UNSET_VARIABLE",
        ),
        (
            "[ingest.sources.s]\nscheme = \"github\"\nsecrets = [\"inline-secret\"]",
            &[],
            "secret_env",
        ),
        (
            "[ingest.sources.s]\nscheme = \"github\"\nsecrets = [{ secret_env = \"PATH\" }]\nallow_ips = [\"10.0.0.0/33\"]",
            &[],
            "ingest.sources.s.allow_ips[0]",
        ),
        (
            "",
            &[("HOOKFLEET__WORKER__CONCURRENCY", "many")],
            "concurrency",
        ),
    ];
    for (toml, vars, field) in cases {
        let message = error_of(toml, vars);
        assert!(
            message.contains(field),
            "config {toml:?} gave {message:?}, which does not name {field:?}"
        );
        assert!(!message.contains("inline-secret"), "{message}");
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let s = load_shipped("hookfleet.toml");
    assert!(!s.ingest.sources.is_empty());
    assert!(!s.worker.limits.models.is_empty());
}

#[test]
fn the_deploy_configs_are_valid() {
    for path in [
        "deploy/docker/hookfleet.toml",
        "deploy/k8s/base/hookfleet.toml",
        "deploy/k8s/overlays/dev/hookfleet.toml",
    ] {
        let s = load_shipped(path);
        assert!(!s.worker.pipelines.is_empty(), "{path} has pipelines");
    }
}

#[test]
fn the_readmes_minimal_config_is_valid() {
    let readme = std::fs::read_to_string(format!("{}/../README.md", env!("CARGO_MANIFEST_DIR")));
    let readme = readme.unwrap();
    let block = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md shows a TOML config");
    let s = load_text(block.to_owned(), "README.md");
    assert_eq!(s.worker.pipelines.len(), 1);
    assert!(s.ingest.sources.contains_key("github"));
}

/// The Kubernetes configs: their worker grace covers their longest job, and the
/// worker pod's `terminationGracePeriodSeconds` leaves time to close after it
/// (deploy/validate/checks.py checks the same model on the rendered manifests).
#[test]
fn the_deploy_configs_let_the_longest_job_finish_before_the_pod_is_killed() {
    let pod = format!(
        "{}/../deploy/k8s/base/worker-deployment.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let pod = std::fs::read_to_string(pod).unwrap();
    let pod_grace: u64 = pod
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for path in [
        "deploy/k8s/base/hookfleet.toml",
        "deploy/k8s/overlays/dev/hookfleet.toml",
    ] {
        let worker = load_shipped(path).worker;
        let (grace, longest) = (worker.shutdown_grace, worker.longest_job());
        assert_eq!(
            longest,
            Duration::from_secs(90),
            "{path}: limiter wait 30s + timeout 60s"
        );
        assert!(
            grace >= longest,
            "{path}: shutdown_grace {grace:?} < longest job {longest:?}"
        );
        assert!(
            Duration::from_secs(pod_grace) >= grace + Duration::from_secs(10),
            "{path}: terminationGracePeriodSeconds {pod_grace} leaves under 10s after {grace:?}"
        );
    }
}

/// Loads a config file of the repository, its secrets pointed at files.
fn load_shipped(relative: &str) -> Settings {
    let path = format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"));
    load_text(std::fs::read_to_string(&path).unwrap(), relative)
}

/// Loads config `text`, its secrets pointed at files made here.
fn load_text(text: String, relative: &str) -> Settings {
    // Secrets are referenced by env name or by a mounted file's path; point
    // every reference at a file made here.
    let dir = std::env::temp_dir().join(format!("hf-cfg-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = text;
    for kind in ["secret_env", "secret_file"] {
        for (i, reference) in references(&text, kind).into_iter().enumerate() {
            let path = dir.join(format!("{kind}-{i}"));
            std::fs::write(&path, "example-secret").unwrap();
            text = text.replace(
                &format!("{kind} = \"{reference}\""),
                &format!("secret_file = \"{}\"", path.display()),
            );
        }
    }
    let result = load(&text, &[]);
    std::fs::remove_dir_all(&dir).ok();
    result.unwrap_or_else(|e| panic!("{relative}: {e:#}"))
}

/// The values of `kind = "…"` in `text`, each once.
fn references(text: &str, kind: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .split(&format!("{kind} = \""))
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect();
    found.sort();
    found.dedup();
    found
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("hf-secret-{}", ulid::Ulid::new()));
    let file = std::fs::File::create(&path).unwrap();
    (path, file)
}

#[test]
fn body_hash_dedup_is_on_by_default_only_for_schemes_without_a_signed_timestamp() {
    let s = load(
        "[ingest.sources.gh]\nscheme = \"github\"\nsecrets = [{ secret_env = \"PATH\" }]\n\
         [ingest.sources.shop]\nscheme = \"shopify\"\nsecrets = [{ secret_env = \"PATH\" }]\n\
         [ingest.sources.generic]\nscheme = \"hmac\"\nsecrets = [{ secret_env = \"PATH\" }]\nhmac = { header = \"x-sig\" }\n\
         [ingest.sources.stripe]\nscheme = \"stripe\"\nsecrets = [{ secret_env = \"PATH\" }]\n\
         [ingest.sources.std]\nscheme = \"standard\"\nsecrets = [{ secret_env = \"PATH\" }]\n\
         [ingest.sources.gh_off]\nscheme = \"github\"\nsecrets = [{ secret_env = \"PATH\" }]\ndedup_body = false\n\
         [ingest.sources.stripe_on]\nscheme = \"stripe\"\nsecrets = [{ secret_env = \"PATH\" }]\ndedup_body = true\n",
        &[],
    )
    .unwrap();
    let on = |name: &str| s.ingest.sources[name].dedups_body();
    assert!(on("gh") && on("shop") && on("generic") && on("stripe_on"));
    assert!(!on("stripe") && !on("std") && !on("gh_off"));
}

#[test]
fn forwarded_header_names_must_fit_an_amqp_table_key() {
    let long = "x".repeat(201);
    let error = load(
        &format!(
            "[ingest.sources.gh]\nscheme = \"github\"\nsecrets = [{{ secret_env = \"PATH\" }}]\nforward_headers = [\"{long}\"]\n"
        ),
        &[],
    )
    .unwrap_err();
    assert!(error.to_string().contains("forward_headers[0]"), "{error}");
}

/// A pipeline whose HTTP sink's token comes from a variable nobody sets, and a
/// source whose secret is unset too.
const UNSET_SECRETS: &str = r#"
namespace = "broker-only"
[ingest.sources.gh]
scheme = "github"
secrets = [{ secret_env = "HF_TEST_UNSET_WEBHOOK_SECRET" }]
[worker.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:8090/v1"
[[worker.pipelines]]
name = "first"
provider = "mock"
model = "m"
user = "{{ payload }}"
[[worker.pipelines]]
name = "second"
provider = "mock"
model = "m"
user = "{{ payload }}"
sinks = [
  { kind = "amqp" },
  { kind = "http", name = "out", url = "https://example.com/hook", auth = { kind = "bearer", token = { secret_env = "HF_TEST_UNSET_OUT_TOKEN" } } },
]
"#;

#[test]
fn errors_under_a_list_index_name_the_field_with_a_dot() {
    let toml = UNSET_SECRETS.replace("HF_TEST_UNSET_WEBHOOK_SECRET", "PATH");
    let error = load(&toml, &[]).unwrap_err().to_string();
    assert!(error.contains("`worker.pipelines[1].sinks[1]`"), "{error}");
    assert!(
        error.contains("HF_TEST_UNSET_OUT_TOKEN is not set"),
        "{error}"
    );
}

#[test]
fn broker_settings_need_no_provider_sink_or_source_secret() {
    let sources = Sources {
        file: None,
        toml: Some(UNSET_SECRETS.to_owned()),
        env: env(&[("HOOKFLEET__AMQP__URL", "amqp://u:p@rabbit:5672/%2f")]),
    };
    let s = WorkerSettings::load_broker_from(sources.clone()).unwrap();
    assert_eq!(s.namespace, "broker-only");
    assert_eq!(s.amqp.url, "amqp://u:p@rabbit:5672/%2f");
    assert!(s.worker.pipelines.is_empty());
    assert!(
        WorkerSettings::load_from(sources).is_err(),
        "the full load needs them"
    );
}

#[test]
fn broker_settings_still_check_what_they_read() {
    let sources = Sources {
        file: None,
        toml: Some("namespace = \"no spaces allowed\"".to_owned()),
        env: env(&[]),
    };
    let error = WorkerSettings::load_broker_from(sources)
        .unwrap_err()
        .to_string();
    assert!(error.contains("`namespace`"), "{error}");
}

/// Each service reads and checks its own section only: ingest starts while the
/// worker's secrets are unset and its section is invalid, and the other way round;
/// each still refuses its own bad field by name.
#[test]
fn each_service_checks_only_its_own_section() {
    let sources = |toml: &str| Sources {
        file: None,
        toml: Some(toml.to_owned()),
        env: env(&[]),
    };
    let bad_worker = format!("{UNSET_SECRETS}\n[worker]\nconcurrency = 0\n")
        .replace("HF_TEST_UNSET_WEBHOOK_SECRET", "PATH");
    let ingest = hookfleet_ingest::config::Settings::load_from(sources(&bad_worker)).unwrap();
    assert!(ingest.ingest.sources.contains_key("gh"));
    let error = WorkerSettings::load_from(sources(&bad_worker)).unwrap_err();
    assert!(
        error.to_string().contains("HF_TEST_UNSET_OUT_TOKEN"),
        "{error}"
    );

    let bad_ingest = "[ingest]\nmax_in_flight = 0\n[ingest.sources.gh]\nscheme = \"github\"\n\
         secrets = [{ secret_env = \"HF_TEST_UNSET_WEBHOOK_SECRET\" }]\n";
    let worker = WorkerSettings::load_from(sources(bad_ingest)).unwrap();
    assert_eq!(worker.namespace, "hookfleet");
    let error = hookfleet_ingest::config::Settings::load_from(sources(bad_ingest)).unwrap_err();
    assert!(
        error.to_string().contains("HF_TEST_UNSET_WEBHOOK_SECRET"),
        "{error}"
    );
    let bad_field = bad_ingest.replace("HF_TEST_UNSET_WEBHOOK_SECRET", "PATH");
    let error = hookfleet_ingest::config::Settings::load_from(sources(&bad_field)).unwrap_err();
    assert!(
        error.to_string().contains("ingest.max_in_flight"),
        "{error}"
    );
}
