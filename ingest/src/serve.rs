//! Serving a router on a listener with bounds on slow clients, and a graceful stop.
//!
//! `axum::serve` offers no connection settings, so this is its accept loop with
//! hyper's HTTP/1.1 connection builder (`hyper::server::conn::http1`), which closes
//! a connection whose request head does not arrive within `header_read_timeout`
//! and answers 431 to a head over `max_header_bytes`. Connections are watched by
//! hyper-util's `GracefulShutdown`: when `stop` is cancelled the listener closes,
//! idle connections close, and the call returns once in-flight requests finished.
//! The body timeout (408) and the in-flight cap (503) are per request, in the
//! router (`routes::hooks`, `app`). HTTP/2 is not served: webhook senders and
//! ingress controllers speak HTTP/1.1 to an upstream.

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest time a request head may take to arrive.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes (431 above it).
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `stop` is cancelled, then waits for the
/// requests in flight. Each request carries `ConnectInfo<SocketAddr>` (the TCP peer).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    stop: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that hangs up or times out is routine, not an error of ours.
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "Connection ended with an error.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
