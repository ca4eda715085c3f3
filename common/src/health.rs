//! The `health` subcommands' probe: one `GET` of a service's own `/readyz` or
//! `/healthz`, for container healthchecks in images without a shell or curl
//! (distroless). It speaks just enough HTTP/1.1 for our own servers: a request
//! with `Connection: close`, then the status line of the answer.
//!
//! It does not follow redirects, read bodies or speak TLS: the services it
//! probes serve plain HTTP on the address in their config.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The flags of `hookfleet-ingest health` and `hookfleet-worker health`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Ask `/healthz` (the process is alive) instead of `/readyz` (it is ready:
    /// connected to RabbitMQ and, for the worker, consuming).
    #[arg(long)]
    pub live: bool,
    /// Probe this address instead of the one in the config.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// How long to wait for the answer.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

impl HealthArgs {
    /// The path to ask.
    pub fn path(&self) -> &'static str {
        if self.live { "/healthz" } else { "/readyz" }
    }

    /// Probes the service listening on `listen` (or `--addr`); exit 0 when it
    /// answers 200, else 1 with the reason on stderr.
    pub async fn run(&self, listen: SocketAddr) -> std::process::ExitCode {
        let target = self.addr.unwrap_or_else(|| local_target(listen));
        match probe(target, self.path(), self.timeout).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                let cause = std::error::Error::source(&e)
                    .map(|cause| format!(": {cause}"))
                    .unwrap_or_default();
                eprintln!("unhealthy: {e}{cause}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered on the address.
    #[error("cannot connect to {addr}")]
    Connect {
        /// Where the probe connected.
        addr: SocketAddr,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke before a status line arrived.
    #[error("no answer from {addr}")]
    Io {
        /// Where the probe connected.
        addr: SocketAddr,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// Where the probe connected.
        addr: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// Something answered that is not an HTTP status line.
    #[error("{addr} did not answer HTTP")]
    NotHttp {
        /// Where the probe connected.
        addr: SocketAddr,
    },
    /// The service answered with a status other than 200.
    #[error("{addr}{path} answered {status}")]
    Status {
        /// Where the probe connected.
        addr: SocketAddr,
        /// The path asked.
        path: String,
        /// The HTTP status.
        status: u16,
    },
}

/// The address to probe for a service listening on `listen`: a wildcard
/// (`0.0.0.0`, `::`) becomes the loopback address of its family, since the
/// probe runs next to the service.
pub fn local_target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET path` on `addr`; `Ok` when it answers 200 within `timeout`.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let status = tokio::time::timeout(timeout, status_of(addr, path))
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })??;
    if status == 200 {
        Ok(())
    } else {
        Err(ProbeError::Status {
            addr,
            path: path.to_owned(),
            status,
        })
    }
}

async fn status_of(addr: SocketAddr, path: &str) -> Result<u16, ProbeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let io = |source| ProbeError::Io { addr, source };
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .map_err(io)?;
    // `HTTP/1.1 200 OK`
    let mut words = line.split_ascii_whitespace();
    match (words.next(), words.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/") => Ok(status),
        _ => Err(ProbeError::NotHttp { addr }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let v6: SocketAddr = "[::]:9090".parse().unwrap();
        let given: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(local_target(v4), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(local_target(v6), "[::1]:9090".parse().unwrap());
        assert_eq!(local_target(given), given);
    }
}
