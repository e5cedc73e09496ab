//! The local HTTP status API (axum): `GET /status` (JSON, see [`Status`]) and `GET /health`.
//!
//! Handlers never touch the peer: they ask the event loop for a snapshot over a channel.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::status::{Status, StatusQuery};

/// How long a status request waits for the event loop.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn router(queries: mpsc::Sender<StatusQuery>) -> Router {
    Router::new().route("/status", get(status)).route("/health", get(health)).with_state(queries)
}

/// Serves until `stop` fires (or its sender is dropped), then lets open requests finish.
pub(crate) async fn serve(listener: TcpListener, queries: mpsc::Sender<StatusQuery>, stop: oneshot::Receiver<()>) {
    let shutdown = async {
        let _ = stop.await;
    };
    if let Err(e) = axum::serve(listener, router(queries)).with_graceful_shutdown(shutdown).await {
        warn!(error = %e, "HTTP status API stopped");
    }
}

async fn health() -> &'static str {
    "ok"
}

async fn status(State(queries): State<mpsc::Sender<StatusQuery>>) -> Result<Json<Status>, (StatusCode, &'static str)> {
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    let (tx, rx) = oneshot::channel();
    queries.send(tx).await.map_err(|_| unavailable)?;
    match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
        Ok(Ok(status)) => Ok(Json(status)),
        Ok(Err(_)) => Err(unavailable),
        Err(_) => Err((StatusCode::SERVICE_UNAVAILABLE, "the node's event loop is not answering")),
    }
}
