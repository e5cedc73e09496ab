//! The local HTTP status API (axum): `GET /status` (JSON, see [`Status`]), `GET /health`, and
//! `GET /lookup?key=KEY` (JSON, see [`LookupAnswer`]).
//!
//! Handlers never touch the peer: they send the event loop a [`Query`] over a channel.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::{Json, Router};
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::query::{LookupAnswer, Query};
use super::status::Status;

/// How long a status request waits for the event loop.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a lookup may take. The core bounds it too (`max_hops` requests of at most
/// `rpc_timeout` each); this only keeps a stuck request from hanging the client.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

type Failure = (StatusCode, String);

pub(crate) fn router(queries: mpsc::Sender<Query>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/lookup", get(lookup))
        .with_state(queries)
}

/// Serves until `stop` fires (or its sender is dropped), then lets open requests finish.
pub(crate) async fn serve(listener: TcpListener, queries: mpsc::Sender<Query>, stop: oneshot::Receiver<()>) {
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

fn unavailable() -> Failure {
    (StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down".into())
}

async fn ask<T>(
    queries: &mpsc::Sender<Query>,
    query: Query,
    rx: oneshot::Receiver<T>,
    limit: Duration,
) -> Result<T, Failure> {
    queries.send(query).await.map_err(|_| unavailable())?;
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(unavailable()),
        Err(_) => Err((StatusCode::GATEWAY_TIMEOUT, format!("no answer within {} s", limit.as_secs()))),
    }
}

async fn status(State(queries): State<mpsc::Sender<Query>>) -> Result<Json<Status>, Failure> {
    let (tx, rx) = oneshot::channel();
    ask(&queries, Query::Status(tx), rx, QUERY_TIMEOUT).await.map(Json)
}

/// `key` is 40 hex digits or any percent-encoded text, hashed as
/// [`crate::overlay::NodeId::from_user_key`] says.
async fn lookup(State(queries): State<mpsc::Sender<Query>>, uri: Uri) -> Result<Json<LookupAnswer>, Failure> {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, m.to_owned());
    let raw = uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key=")))
        .ok_or_else(|| bad("missing ?key="))?;
    let text =
        percent_decode_str(&raw.replace('+', " ")).decode_utf8().map_err(|_| bad("the key is not UTF-8"))?.into_owned();
    if text.is_empty() {
        return Err(bad("empty key"));
    }
    let (tx, rx) = oneshot::channel();
    let answer = ask(&queries, Query::Lookup { key: text, reply: tx }, rx, LOOKUP_TIMEOUT).await?;
    answer.map(Json).map_err(|message| (StatusCode::BAD_GATEWAY, message))
}
