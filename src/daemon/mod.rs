//! The tokio driver: sockets, timers, files, signals and the HTTP status API. The only part of
//! p2psip that does I/O or reads the clock.
//!
//! [`run`] binds every listener first (a busy address is one clear error), then runs one
//! event loop that owns the [`Peer`] and feeds it everything that arrives,
//! until SIGINT or SIGTERM.
//!
//! # Layout
//! - [`config`]: the TOML settings file, defaults, command-line overrides, data directory.
//! - `listeners`: binding UDP and TCP on the overlay and proxy addresses, and the HTTP port.
//! - `event_loop`: the loop that owns the peer; where transmits go (RFC 3261 §18.2.2).
//! - `connection`: one task per TCP connection; stream framing (§18.3).
//! - `http`, [`status`]: the status API and its JSON.
//! - [`status_client`]: `p2psip status`'s side of it.
//! - `signal`: SIGINT/SIGTERM.
//!
//! Not here yet: joining an overlay (`join` is accepted and reported), TLS, connection limits.

pub mod config;
mod connection;
mod error;
mod event_loop;
mod http;
mod listeners;
mod signal;
pub mod status;
pub mod status_client;

use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn, Instrument};

pub use config::{Config, ConfigError, Overrides};
pub use error::{DaemonError, StatusError};
pub use status_client::fetch_status;

use crate::peer::{Peer, PeerConfig};
use event_loop::EventLoop;
use listeners::Listeners;
use status::NodeInfo;

/// How long shutdown waits for the HTTP server to finish open requests.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a node until SIGINT or SIGTERM. Errors only while starting.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    config.validate()?;
    let data_dir = config.create_data_dir()?;
    let shutdown = signal::shutdown_signal()?;
    let listeners = Listeners::bind(config.listen, config.proxy).await?;
    let (http_listener, http_addr) = listeners::bind_http(config.http).await?;
    let (listen, proxy) = (listeners.overlay.addr, listeners.proxy.addr);

    let span = tracing::info_span!("node", %listen);
    span.in_scope(|| {
        info!(%proxy, http = %http_addr, data_dir = %data_dir.display(), "p2psip node listening (UDP and TCP)");
        if !config.join.is_empty() {
            warn!(join = ?config.join, "joining an overlay is not implemented yet; --join is stored and ignored");
        }
    });

    let mut peer_config = PeerConfig::new(listen, proxy);
    peer_config.domain = config.domain.clone();
    peer_config.max_datagram_size = config.max_datagram_size;
    peer_config.seed = random_seed()?;
    let peer = Peer::new(peer_config, Instant::now());

    let (query_tx, query_rx) = mpsc::channel(16);
    let (stop_http, http_stopped) = oneshot::channel();
    let http = tokio::spawn(http::serve(http_listener, query_tx, http_stopped).instrument(span.clone()));

    let info = NodeInfo { listen, proxy, http: http_addr, domain: config.domain, join: config.join, data_dir };
    EventLoop::new(peer, listeners, info, query_rx).run(shutdown).instrument(span).await;

    let _ = stop_http.send(());
    // Open keep-alive connections may hold the server; they are cut when the runtime stops.
    let _ = tokio::time::timeout(HTTP_DRAIN, http).await;
    Ok(())
}

/// 64 bits from the operating system: the peer derives its nonce key from this seed.
fn random_seed() -> Result<u64, DaemonError> {
    let bytes: [u8; 8] =
        ring::rand::generate(&ring::rand::SystemRandom::new()).map_err(|_| DaemonError::Random)?.expose();
    Ok(u64::from_le_bytes(bytes))
}
