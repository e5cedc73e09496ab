//! The client side of the status API, for `p2psip status` and `p2psip lookup`: one GET over
//! HTTP/1.1.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::daemon::StatusError;

/// Fetches and parses a node's `/status`. The JSON is returned as a generic value so that a
/// client prints counters it does not know about (newer node, older client).
pub async fn fetch_status(addr: SocketAddr, timeout: Duration) -> Result<serde_json::Value, StatusError> {
    fetch_json(addr, "/status", timeout).await
}

/// `GET path` (with its query), parsed as JSON. An error status carries the node's one-line
/// explanation.
pub async fn fetch_json(addr: SocketAddr, path: &str, timeout: Duration) -> Result<serde_json::Value, StatusError> {
    tokio::time::timeout(timeout, fetch(addr, path))
        .await
        .unwrap_or(Err(StatusError::Timeout { addr, secs: timeout.as_secs() }))
}

async fn fetch(addr: SocketAddr, path: &str) -> Result<serde_json::Value, StatusError> {
    let http = |source| StatusError::Http { addr, source };
    let stream = TcpStream::connect(addr).await.map_err(|source| StatusError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    // Drives the connection; it ends when `sender` is dropped.
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|source| StatusError::Request { addr, source })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(http)?.to_bytes();
    if !status.is_success() {
        let message = String::from_utf8_lossy(&body).trim().replace('\n', " ");
        return Err(StatusError::Status { addr, status, message });
    }
    serde_json::from_slice(&body).map_err(|source| StatusError::Json { addr, source })
}
