//! The client side of the status API, for `p2psip status`: one `GET /status` over HTTP/1.1.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::StatusError;

/// Fetches and parses a node's `/status`. The JSON is returned as a generic value so that a
/// client prints counters it does not know about (newer node, older client).
pub async fn fetch_status(addr: SocketAddr, timeout: Duration) -> Result<serde_json::Value, StatusError> {
    tokio::time::timeout(timeout, fetch(addr))
        .await
        .unwrap_or(Err(StatusError::Timeout { addr, secs: timeout.as_secs() }))
}

async fn fetch(addr: SocketAddr) -> Result<serde_json::Value, StatusError> {
    let http = |source| StatusError::Http { addr, source };
    let stream = TcpStream::connect(addr).await.map_err(|source| StatusError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
    // Drives the connection; it ends when `sender` is dropped.
    tokio::spawn(conn);
    let request = Request::get("/status")
        .header(HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|source| StatusError::Request { addr, source })?;
    let response = sender.send_request(request).await.map_err(http)?;
    if !response.status().is_success() {
        return Err(StatusError::Status { addr, status: response.status() });
    }
    let body = response.into_body().collect().await.map_err(http)?.to_bytes();
    serde_json::from_slice(&body).map_err(|source| StatusError::Json { addr, source })
}
