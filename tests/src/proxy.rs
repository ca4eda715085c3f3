//! A TCP proxy the test controls, standing between a service and RabbitMQ or
//! Redis, so a test can cut one service's connections without touching anyone
//! else's.
//!
//! `sever()` drops every open connection and refuses new ones (the port stays
//! bound and resets connections, like a dead broker host); `restore()` accepts
//! again. `stall()` keeps connections open but forwards nothing, like a broker
//! that stopped answering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A severable TCP proxy to one upstream address.
pub struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    stalled: watch::Sender<bool>,
    generation: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Proxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let (stalled, _) = watch::channel(false);
        let stop = CancellationToken::new();
        let (up2, gen2, stop2) = (up.clone(), generation.clone(), stop.clone());
        let stalled2 = stalled.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                    _ = stop2.cancelled() => return,
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut severed = gen2.subscribe();
                let stall = stalled2.subscribe();
                let stop = stop2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = pump(client_read, server_write, stall.clone()) => {}
                        _ = pump(server_read, client_write, stall) => {}
                        _ = severed.changed() => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            up,
            stalled,
            generation,
            stop,
        }
    }

    /// Stops forwarding bytes but keeps every connection open: the peer sees a
    /// broker that accepted its request and never answers.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again after `stall`.
    pub fn unstall(&self) {
        self.stalled.send_replace(false);
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An AMQP URL through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// A Redis URL through this proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Drops every open connection and refuses new ones.
    pub fn sever(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes one way, holding them while `stall` is true.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stall: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stall.wait_for(|stalled| !*stalled).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A port nothing answers on: a socket bound to `127.0.0.1:0` but not listening,
/// so connections to it are refused, and no other process can take the port
/// while the test holds this (unlike a port bound, read and released).
pub struct ClosedPort {
    _socket: tokio::net::TcpSocket,
    /// The refused port.
    pub port: u16,
}

impl ClosedPort {
    /// Reserves a port that refuses connections.
    pub fn reserve() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("bind a port");
        let port = socket.local_addr().expect("bound").port();
        Self {
            _socket: socket,
            port,
        }
    }
}
