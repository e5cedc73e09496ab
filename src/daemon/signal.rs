//! Waiting for the signals that stop the node: SIGINT (Ctrl-C) and SIGTERM.

use tracing::info;

use super::DaemonError;

/// Installs the handlers now (so a signal that arrives early is not fatal) and returns a
/// future that completes, after logging one line, when either signal arrives.
#[cfg(unix)]
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let install = |kind| signal(kind).map_err(|source| DaemonError::Io { doing: "install a signal handler", source });
    let mut term = install(SignalKind::terminate())?;
    let mut int = install(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
    })
}

#[cfg(not(unix))]
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        info!(signal = "Ctrl-C", "shutting down");
    })
}
