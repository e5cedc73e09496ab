//! The local HTTP status API (axum): `GET /status` (JSON, see [`Status`]), `GET /health`,
//! `GET /lookup?key=KEY` (JSON, see [`LookupAnswer`]), `GET /messages` (JSON, see
//! [`crate::mailbox::Messages`]), `GET /metrics` (Prometheus, [`metrics`]), the web page at
//! `GET /` ([`page`]), and `POST /shutdown`, which stops the node as SIGTERM does.
//!
//! What changes the node's state (`POST /shutdown`) needs the token of the data directory
//! (`Authorization: Bearer <token>`, [`crate::daemon::files::token`]); reading does not.
//!
//! Handlers never touch the peer: they send the event loop a `Query` over a channel.
//!
//! The API is for the user's own machine (docs/security.md, M4): a request whose `Host` is not a
//! loopback address, `localhost` or the address the API is bound to gets 403, so a web page
//! cannot read it through DNS rebinding; one a browser marks as cross-site (`Sec-Fetch-Site`,
//! or an `Origin` that is not the API itself) gets 403 too, so a page cannot start lookups;
//! no CORS header is ever sent; and at most `MAX_LOOKUPS` lookups run at once.

pub mod metrics;
pub mod page;
pub mod query;
pub mod status;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use percent_encoding::percent_decode_str;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use query::{LookupAnswer, Query};
use status::Status;

/// How long a status request waits for the event loop.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a lookup may take. The core bounds it too (`max_hops` requests of at most
/// `rpc_timeout` each); this only keeps a stuck request from hanging the client.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Lookups the API runs at once; more get 429.
pub(crate) const MAX_LOOKUPS: usize = 16;

type Failure = (StatusCode, String);

#[derive(Clone)]
pub(crate) struct Api {
    queries: mpsc::Sender<Query>,
    lookups: Arc<tokio::sync::Semaphore>,
    control: Control,
}

/// What the state-changing requests need: the token they must show, and the node's stop.
#[derive(Clone)]
pub(crate) struct Control {
    /// The data directory's token.
    pub token: Arc<str>,
    /// Fired (once) by `POST /shutdown`.
    pub stop: Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>,
}

/// The API's routes, for a listener bound to `bound`.
pub(crate) fn router(queries: mpsc::Sender<Query>, bound: SocketAddr, control: Control) -> Router {
    let api = Api { queries, lookups: Arc::new(tokio::sync::Semaphore::new(MAX_LOOKUPS)), control };
    Router::new()
        .route("/", get(page::page))
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/lookup", get(lookup))
        .route("/messages", get(messages))
        .route("/metrics", get(metrics))
        .route("/shutdown", post(shutdown))
        .with_state(api)
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| same_machine(bound, req, next)))
}

/// Whether `authority` (a `Host` value, or an `Origin` without its scheme) names this API:
/// `localhost`, a loopback address, or the address it is bound to, with any port.
fn names_this_api(authority: &str, bound: SocketAddr) -> bool {
    let host = match authority.rsplit_once(':') {
        // `[::1]:5090`, `127.0.0.1:5090`, `localhost:5090`; a bare IPv6 literal has colons too.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback() || ip == bound.ip())
}

async fn same_machine(bound: SocketAddr, req: Request, next: Next) -> Response {
    let forbidden = |why: &str| (StatusCode::FORBIDDEN, why.to_owned()).into_response();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !names_this_api(host, bound) {
        return forbidden("forbidden: this API answers only requests for localhost");
    }
    if req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return forbidden("forbidden: cross-site request");
    }
    if let Some(origin) = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
        if !names_this_api(authority, bound) {
            return forbidden("forbidden: cross-origin request");
        }
    }
    next.run(req).await
}

/// Serves until `stop` fires (or its sender is dropped), then lets open requests finish.
pub(crate) async fn serve(
    listener: TcpListener,
    queries: mpsc::Sender<Query>,
    control: Control,
    stop: oneshot::Receiver<()>,
) {
    let shutdown = async {
        let _ = stop.await;
    };
    let bound = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "HTTP status API has no address");
            return;
        }
    };
    if let Err(e) = axum::serve(listener, router(queries, bound, control)).with_graceful_shutdown(shutdown).await {
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

async fn status(State(api): State<Api>) -> Result<Json<Status>, Failure> {
    let (tx, rx) = oneshot::channel();
    ask(&api.queries, Query::Status(tx), rx, QUERY_TIMEOUT).await.map(Json)
}

async fn metrics(State(api): State<Api>) -> Result<Response, Failure> {
    let (tx, rx) = oneshot::channel();
    let status = ask(&api.queries, Query::Status(tx), rx, QUERY_TIMEOUT).await?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics::render(&status)).into_response())
}

/// Stops the node as SIGTERM would (it leaves the ring first), for a request that shows the
/// token: 401 without it, 403 with another, 409 once the stop is under way.
async fn shutdown(State(api): State<Api>, req: Request) -> Result<&'static str, Failure> {
    let shown = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(shown) = shown else {
        return Err((StatusCode::UNAUTHORIZED, "the token of the data directory's http-token file is needed".into()));
    };
    if !same_secret(api.control.token.as_bytes(), shown.as_bytes()) {
        return Err((StatusCode::FORBIDDEN, "wrong token".into()));
    }
    let stop = api.control.stop.lock().ok().and_then(|mut s| s.take());
    match stop {
        Some(stop) => {
            let _ = stop.send(());
            Ok("stopping: leaving the overlay")
        }
        None => Err((StatusCode::CONFLICT, "already stopping".into())),
    }
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn messages(State(api): State<Api>) -> Result<Json<crate::mailbox::Messages>, Failure> {
    let (tx, rx) = oneshot::channel();
    ask(&api.queries, Query::Messages(tx), rx, QUERY_TIMEOUT).await.map(Json)
}

/// `key` is 40 hex digits or any percent-encoded text, hashed as
/// [`crate::overlay::NodeId::from_user_key`] says.
async fn lookup(State(api): State<Api>, uri: Uri) -> Result<Json<LookupAnswer>, Failure> {
    let Ok(_slot) = api.lookups.clone().try_acquire_owned() else {
        return Err((StatusCode::TOO_MANY_REQUESTS, format!("{MAX_LOOKUPS} lookups are running; try again")));
    };
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
    let answer = ask(&api.queries, Query::Lookup { key: text, reply: tx }, rx, LOOKUP_TIMEOUT).await?;
    answer.map(Json).map_err(|message| (StatusCode::BAD_GATEWAY, message))
}

#[cfg(test)]
mod tests {
    use super::names_this_api;

    #[test]
    fn only_loopback_localhost_and_the_bound_address_name_the_api() {
        let bound = "192.0.2.5:5090".parse().unwrap();
        for ok in ["127.0.0.1:5090", "127.0.0.1", "localhost:5090", "LOCALHOST", "[::1]:5090", "::1", "192.0.2.5:5090"]
        {
            assert!(names_this_api(ok, bound), "{ok}");
        }
        for bad in
            ["", "evil.example", "evil.example:5090", "192.0.2.6:5090", "[2001:db8::1]:5090", "127.0.0.1.evil.example"]
        {
            assert!(!names_this_api(bad, bound), "{bad}");
        }
    }
}
