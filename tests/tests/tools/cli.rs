//! The binaries' command lines: every `hookfleet-worker …`/`hookfleet-ingest …`
//! written in `deploy/` and in the manual's shell blocks parses with the
//! binary's own clap definition (so a flag that does not exist fails here, not
//! in a Job at 3 a.m.), and the `health` subcommands the compose healthchecks
//! run answer 0 for a running service and 1 for a dead port.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hookfleet_tests::env::TestEnv;
use hookfleet_tests::fleet::WorkerHandle;
use hookfleet_tests::spawn::IngestHandle;
use hookfleet_tests::wait::wait_until;

const BINARIES: [&str; 2] = ["hookfleet-worker", "hookfleet-ingest"];

/// One command line found in a file.
#[derive(Debug)]
struct Found {
    /// `file:line`.
    place: String,
    /// `argv`, the binary's name first.
    argv: Vec<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// Shell words of one line, up to a comment or a shell operator (`|`, `>`,
/// `&&`, `;`, …). Quotes group; `$VAR/` prefixes stay on the word.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '#') if !in_word => break,
            (None, '|' | '>' | '<' | ';' | '&' | '`' | '(' | ')') => break,
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The command starting at a hookfleet binary among `words`, if any: the
/// binary by name or by path (`/usr/local/bin/…`, `$BIN/…`, `./target/…`); in
/// a `kubectl` line, only after `--` (`deploy/hookfleet-worker` is a resource).
fn command_in(words: &[String]) -> Option<Vec<String>> {
    let words = match words.first().map(String::as_str) {
        Some("kubectl") => {
            let dashes = words.iter().position(|w| w == "--")?;
            &words[dashes + 1..]
        }
        _ => words,
    };
    let start = words.iter().position(|w| {
        BINARIES.iter().any(|name| {
            w == name
                || (w.ends_with(&format!("/{name}"))
                    && (w.starts_with('/') || w.starts_with('$') || w.starts_with('.')))
        })
    })?;
    let mut argv = words[start..].to_vec();
    argv[0] = argv[0].rsplit('/').next().unwrap_or_default().to_owned();
    Some(argv)
}

/// The flow sequences (`["a", "b"]`) of a line, as JSON arrays of strings.
fn flow_arrays(line: &str) -> Vec<Vec<String>> {
    let mut arrays = Vec::new();
    let mut rest = line;
    while let Some(open) = rest.find("[\"") {
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        let text = &rest[open..open + close + 1];
        if let Ok(array) = serde_json::from_str::<Vec<String>>(text) {
            arrays.push(array);
        }
        rest = &rest[open + close + 1..];
    }
    arrays
}

/// Commands in a YAML or Dockerfile: a flow sequence naming the binary
/// (`command:`, `CMD`, `ENTRYPOINT`, a healthcheck's `test:`), plus the `args:`
/// that follow it in the same container; commands in shell scripts.
fn deploy_commands(path: &Path, text: &str) -> Vec<Found> {
    let shell = path.extension().is_some_and(|e| e == "sh");
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let place = format!("{}:{}", path.display(), i + 1);
        if shell {
            if let Some(argv) = command_in(&shell_words(line)) {
                found.push(Found { place, argv });
            }
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        for array in flow_arrays(line) {
            let Some(mut argv) = command_in(&array) else {
                continue;
            };
            if line.trim_start().starts_with("command:") {
                argv.extend(following_args(&lines[i + 1..], &place));
            }
            found.push(Found {
                place: place.clone(),
                argv,
            });
        }
    }
    found
}

/// The `args:` of a container after its `command:` line: the next line that is
/// not a comment, if it is `args:` (which must then be a flow sequence).
fn following_args(lines: &[&str], place: &str) -> Vec<String> {
    let next = lines
        .iter()
        .map(|l| l.trim_start())
        .find(|l| !l.starts_with('#') && !l.is_empty());
    match next {
        Some(line) if line.starts_with("args:") => flow_arrays(line)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("{place}: write `args:` as a flow sequence [\"…\"]")),
        _ => Vec::new(),
    }
}

/// Commands in the shell blocks (```sh, ```bash, ```console) of a Markdown
/// file: lines with a hookfleet binary (after `kubectl exec … --` too), and
/// JSON argument arrays starting with `dlq`/`run` (a Job's `args` set by `yq`).
fn markdown_commands(path: &Path, text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    let mut shell = false;
    let mut fenced = false;
    let mut joined = String::new();
    for (i, line) in text.lines().enumerate() {
        let place = format!("{}:{}", path.display(), i + 1);
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fenced = !fenced;
            shell = fenced && matches!(info.trim(), "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !shell {
            continue;
        }
        for array in flow_arrays(line) {
            if matches!(array.first().map(String::as_str), Some("dlq" | "run")) {
                let mut argv = vec!["hookfleet-worker".to_owned()];
                argv.extend(array);
                found.push(Found {
                    place: place.clone(),
                    argv,
                });
            }
        }
        // A trailing backslash continues the command on the next line.
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                continue;
            }
            None => joined.push_str(trimmed),
        }
        let command = std::mem::take(&mut joined);
        let command = command.trim_start_matches("$ ");
        if let Some(argv) = command_in(&shell_words(command)) {
            found.push(Found { place, argv });
        }
    }
    found
}

/// Every hookfleet command line written in deploy/, the README and docs/.
fn documented_commands() -> Vec<Found> {
    let root = repo();
    let mut found = Vec::new();
    let mut markdown = vec![root.join("README.md")];
    markdown.extend(files(&root.join("docs")));
    for path in files(&root.join("deploy")) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "md") {
            markdown.push(path);
        } else {
            found.extend(deploy_commands(&path, &text));
        }
    }
    for path in markdown {
        if path.extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(&path).expect("readable markdown");
            found.extend(markdown_commands(&path, &text));
        }
    }
    found
}

/// Parses `argv` as the binary does; `--help`/`--version` count as parsed.
fn parse(argv: &[String]) -> Result<(), clap::Error> {
    let result = match argv[0].as_str() {
        "hookfleet-worker" => hookfleet_worker::cli::Cli::try_parse_from(argv).map(drop),
        _ => hookfleet_ingest::cli::Cli::try_parse_from(argv).map(drop),
    };
    match result {
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

use clap::Parser as _;

#[test]
fn every_documented_command_line_parses() {
    let found = documented_commands();
    let failures: Vec<String> = found
        .iter()
        .filter_map(|f| {
            parse(&f.argv)
                .err()
                .map(|e| format!("{}: {:?}\n{}", f.place, f.argv, e.render()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Not vacuous: the places that matter were found.
    let at = |file: &str, words: &[&str]| {
        found
            .iter()
            .any(|f| f.place.contains(file) && words.iter().all(|w| f.argv.iter().any(|a| a == w)))
    };
    assert!(at("dlq-replay/job.yaml", &["dlq", "replay"]), "{found:#?}");
    assert!(at("base/worker-deployment.yaml", &["run"]));
    assert!(at("base/ingest-deployment.yaml", &["hookfleet-ingest"]));
    assert!(at("docker/compose.yaml", &["health"]));
    assert!(at("docker/Dockerfile", &["hookfleet-ingest"]));
    assert!(at("local/demo.sh", &["run"]));
    assert!(at("k8s/README.md", &["dlq", "stats"]), "kubectl exec lines");
    assert!(at("k8s/README.md", &["--limit", "500"]), "the yq args");
    assert!(at("docs/dead-letters.md", &["purge", "--yes"]));
    assert!(found.len() >= 20, "{found:#?}");
}

#[test]
fn a_flag_that_does_not_exist_is_caught() {
    let job = "          command: [\"/usr/local/bin/hookfleet-worker\"]\n          # filters\n          args: [\"dlq\", \"replay\", \"--source\", \"stripe\", \"--bogus\"]\n";
    let found = deploy_commands(Path::new("job.yaml"), job);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].argv,
        [
            "hookfleet-worker",
            "dlq",
            "replay",
            "--source",
            "stripe",
            "--bogus"
        ]
    );
    assert!(parse(&found[0].argv).is_err());

    let doc = "```sh\nkubectl -n x exec deploy/w -- hookfleet-worker dlq purge --class poison \\\n  --older-than 7d --nope   # preview\n```\n";
    let found = markdown_commands(Path::new("doc.md"), doc);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].argv.last().map(String::as_str), Some("--nope"));
    assert!(parse(&found[0].argv).is_err());
}

/// A config file with `text`, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("hf-cli-{}.toml", ulid::Ulid::new()));
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

async fn ingest_health(config: &str, extra: &[&str]) -> ExitCode {
    let mut argv = vec!["hookfleet-ingest", "--config", config, "health"];
    argv.extend_from_slice(extra);
    let cli = hookfleet_ingest::cli::Cli::try_parse_from(argv).expect("valid arguments");
    hookfleet_ingest::cli::run(cli).await
}

async fn worker_health(config: &ConfigFile, extra: &[&str]) -> ExitCode {
    let mut argv = vec!["hookfleet-worker", "--config", config.path(), "health"];
    argv.extend_from_slice(extra);
    let cli = hookfleet_worker::cli::Cli::try_parse_from(argv).expect("valid arguments");
    hookfleet_worker::cli::run(cli).await
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_health_answers_0_when_ready_and_1_on_a_dead_port() {
    let env = TestEnv::new().await;
    let ingest = IngestHandle::start(env.settings.clone()).await;
    // As in compose: the configured address is the wildcard one.
    let port = port_of(&ingest.base_url);
    let config = ConfigFile::new(&format!("[ingest]\nlisten = \"0.0.0.0:{port}\"\n"));
    let path = config.path();
    wait_until(Duration::from_secs(10), || async move {
        ingest_health(path, &[]).await == ExitCode::SUCCESS
    })
    .await;
    assert_eq!(ingest_health(path, &["--live"]).await, ExitCode::SUCCESS);

    ingest.stop().await.expect("ingest stops cleanly");
    assert_eq!(ingest_health(path, &[]).await, ExitCode::FAILURE);
    assert_eq!(ingest_health(path, &["--live"]).await, ExitCode::FAILURE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_health_answers_0_when_consuming_and_1_on_a_dead_port() {
    let env = TestEnv::new().await;
    let worker = WorkerHandle::start_consuming(env.settings.clone()).await;
    let port = port_of(&worker.admin_url);
    let config = ConfigFile::new(&format!("[worker]\nadmin_listen = \"0.0.0.0:{port}\"\n"));
    assert_eq!(worker_health(&config, &[]).await, ExitCode::SUCCESS);
    assert_eq!(worker_health(&config, &["--live"]).await, ExitCode::SUCCESS);

    worker.stop().await.expect("worker stops cleanly");
    assert_eq!(worker_health(&config, &[]).await, ExitCode::FAILURE);
    let elsewhere = format!("127.0.0.1:{port}");
    assert_eq!(
        worker_health(&config, &["--addr", &elsewhere, "--live"]).await,
        ExitCode::FAILURE
    );
}
