//! The shutdown signal: SIGTERM or Ctrl-C cancels one `CancellationToken` that
//! every long-running task of a service watches. No global statics: tests cancel
//! their own token to stop an in-process service.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on SIGTERM or SIGINT; returns when the token is cancelled for
/// any reason.
pub async fn cancel_on_signal(token: CancellationToken) {
    let terminate = async {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Cannot listen for SIGTERM.");
                    std::future::pending::<()>().await;
                }
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received; shutting down."),
        _ = tokio::signal::ctrl_c() => tracing::info!("Interrupt received; shutting down."),
        _ = token.cancelled() => return,
    }
    token.cancel();
}
