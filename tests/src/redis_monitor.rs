//! What a test namespace costs in Redis round trips, seen by Redis itself:
//! `MONITOR` on a connection of its own, keeping the commands that name one of
//! the namespace's keys (other tests share the server, so global counters such
//! as `INFO commandstats` would count their work too).
//!
//! Commands a script runs are left out (`MONITOR` shows them as sent by
//! `lua`): each command kept is one a client sent. A transaction's `MULTI`
//! and `EXEC` name no key; they are kept when the client that sent them also
//! sent a command of the namespace, so [`round_trips`] can count the
//! transaction as the one round trip it is. The services send their hot
//! path's Redis work as one script call or one transaction per round trip.
//!
//! `MONITOR` shows a command as it runs, in order: [`RedisMonitor::seen`] sends
//! a marker command of its own and waits for it, so every command that ran
//! before the call is in the answer, without sleeping.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;

use crate::wait::wait_until;

/// Redis's address, as `env::REDIS_URL` names it.
const REDIS_ADDR: &str = "127.0.0.1:6379";

/// One command a client sent (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Its name, upper-case (`EVALSHA`).
    pub name: String,
    /// The line `MONITOR` showed, for failure messages.
    pub line: String,
    /// The client that sent it (`127.0.0.1:5000`).
    pub client: String,
}

/// Round trips in `commands`: each command outside a transaction, and each
/// `MULTI` … `EXEC` block, counts one.
pub fn round_trips(commands: &[Command]) -> usize {
    let mut open = false;
    let mut count = 0;
    for command in commands {
        match command.name.as_str() {
            "MULTI" => open = true,
            "EXEC" => {
                open = false;
                count += 1;
            }
            _ if !open => count += 1,
            _ => {}
        }
    }
    count
}

/// A `MONITOR` of one namespace's commands. Stops when dropped.
pub struct RedisMonitor {
    namespace: String,
    lines: Arc<Mutex<Vec<Command>>>,
    _reader: AbortOnDropHandle<()>,
}

impl RedisMonitor {
    /// Starts monitoring; every command sent after this returns is seen.
    pub async fn start(namespace: &str) -> Self {
        let mut stream = TcpStream::connect(REDIS_ADDR)
            .await
            .expect("connect to Redis");
        stream
            .write_all(b"MONITOR\r\n")
            .await
            .expect("send MONITOR");
        let mut reader = BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).await.expect("MONITOR's answer");
        assert_eq!(ok.trim(), "+OK", "MONITOR refused: {ok}");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let quoted = format!("\"{namespace}:");
        let sink = Arc::clone(&lines);
        let reader = tokio::spawn(async move {
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if let Some(command) = parse(&line, &quoted) {
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(command);
                }
            }
        });
        Self {
            namespace: namespace.to_owned(),
            lines,
            _reader: AbortOnDropHandle::new(reader),
        }
    }

    /// Every command of the namespace run so far (module docs), and forgets
    /// them: the next call answers what ran after this one.
    pub async fn seen(&self, pool: &deadpool_redis::Pool) -> Vec<Command> {
        let marker = format!("{}:monitor-marker:{}", self.namespace, ulid::Ulid::new());
        let mut cmd = deadpool_redis::redis::cmd("EXISTS");
        cmd.arg(&marker);
        hookfleet_common::redis::run::<i64>(pool, Duration::from_secs(2), &cmd)
            .await
            .expect("the marker command");
        let lines = &self.lines;
        let marker_seen = |lines: &Mutex<Vec<Command>>| {
            lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|c| c.line.contains(&marker))
        };
        wait_until(Duration::from_secs(5), || {
            let seen = marker_seen(lines);
            async move { seen }
        })
        .await;
        let mut all = std::mem::take(&mut *lines.lock().unwrap_or_else(PoisonError::into_inner));
        all.retain(|c| !c.line.contains(&marker));
        let ours: Vec<String> = all
            .iter()
            .filter(|c| !is_transaction_marker(c))
            .map(|c| c.client.clone())
            .collect();
        all.retain(|c| !is_transaction_marker(c) || ours.contains(&c.client));
        all
    }
}

/// `1700000000.123456 [0 127.0.0.1:5000] "EVALSHA" "…" …` → the command, if
/// a client (not a script) sent it and it names a key of the namespace.
fn parse(line: &str, quoted_namespace: &str) -> Option<Command> {
    let (_, rest) = line.split_once(" [")?;
    let (client, args) = rest.split_once("] ")?;
    if client.ends_with(" lua") {
        return None;
    }
    let name = args.split('"').nth(1)?.to_ascii_uppercase();
    if !args.contains(quoted_namespace) && name != "MULTI" && name != "EXEC" {
        return None;
    }
    Some(Command {
        name,
        line: line.trim_end().to_owned(),
        client: client.rsplit(' ').next().unwrap_or(client).to_owned(),
    })
}

fn is_transaction_marker(command: &Command) -> bool {
    command.name == "MULTI" || command.name == "EXEC"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_commands_naming_the_namespace_count() {
        let ns = "\"t-1:";
        let sent = r#"1700000000.1 [0 127.0.0.1:5000] "evalsha" "abc" "1" "t-1:lease:p:m""#;
        assert_eq!(parse(sent, ns).unwrap().name, "EVALSHA");
        let by_script = r#"1700000000.1 [0 lua] "SET" "t-1:lease:p:m" "w""#;
        assert_eq!(parse(by_script, ns), None);
        let other = r#"1700000000.1 [0 127.0.0.1:5000] "GET" "t-2:lease:p:m""#;
        assert_eq!(parse(other, ns), None);
        let multi = r#"1700000000.1 [0 127.0.0.1:5000] "MULTI""#;
        assert_eq!(parse(multi, ns).unwrap().client, "127.0.0.1:5000");
    }

    #[test]
    fn a_transaction_is_one_round_trip() {
        let ns = "\"t-1:";
        let commands: Vec<Command> = [
            r#"1 [0 127.0.0.1:5000] "SET" "t-1:a" "1""#,
            r#"2 [0 127.0.0.1:5000] "MULTI""#,
            r#"3 [0 127.0.0.1:5000] "HSETNX" "t-1:b" "f" "v""#,
            r#"4 [0 127.0.0.1:5000] "SET" "t-1:a" "2""#,
            r#"5 [0 127.0.0.1:5000] "EXEC""#,
            r#"6 [0 127.0.0.1:5000] "GET" "t-1:a""#,
        ]
        .iter()
        .filter_map(|line| parse(line, ns))
        .collect();
        assert_eq!(round_trips(&commands), 3);
    }
}
