//! The node runtime: [`run`] binds every listener first (a busy address is one clear error),
//! builds the [`Peer`] from the settings and the enrolled identity, joins, then runs one event
//! loop that owns the peer and feeds it everything that arrives, until SIGINT or SIGTERM, and
//! leaves the overlay on the way out.
//!
//! # Layout
//! - [`config`]: the TOML settings file, defaults, command-line overrides, data directory.
//! - `listeners`: binding UDP and TCP on the overlay and proxy addresses, and the HTTP port.
//! - `event_loop`: the loop that owns the peer; where transmits go (RFC 3261 §18.2.2).
//! - `connection`: one task per TCP connection; stream framing (§18.3).
//! - `media`: the media anchor's UDP sockets: legs, relay pairs from the port range.

pub mod config;
mod connection;
mod dns;
pub(crate) mod event_loop;
mod listeners;
mod mdns;
mod media;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn, Instrument};

use super::files::{accounts, data_dir, identity as identity_files, mailbox as files_mailbox, record_store};
use super::http::{self, status, status::NodeInfo};
use super::{signal, unix_now, DaemonError};
use crate::peer::{Peer, PeerConfig};
use config::Config;
use event_loop::EventLoop;
use listeners::Listeners;

/// How long shutdown waits for the HTTP server to finish open requests.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a node until SIGINT or SIGTERM. Errors only while starting. `enrolled` is the identity
/// and configuration document [`data_dir::load`] found in the data directory, if any; its
/// document's settings are already merged into `config` ([`Config::apply_document`]).
pub async fn run(config: Config, enrolled: Option<data_dir::Enrolled>) -> Result<(), DaemonError> {
    config.validate()?;
    let data_dir = config.create_data_dir()?;
    let shutdown = signal::shutdown_signal()?;
    let listeners = Listeners::bind(config.listen, config.proxy).await?;
    let (http_listener, http_addr) = listeners::bind_http(config.http).await?;
    let (listen, proxy) = (listeners.overlay.addr, listeners.proxy.addr);

    // `id` (the Node ID, short form) is filled in once the peer exists.
    let span = tracing::info_span!("node", %listen, id = tracing::field::Empty);
    span.in_scope(|| {
        info!(%proxy, http = %http_addr, data_dir = %data_dir.display(), "p2psip node listening (UDP and TCP)");
    });

    let mut peer_config = PeerConfig::new(listen, proxy);
    peer_config.proxy.domain = config.domain.to_ascii_lowercase();
    peer_config.max_datagram_size = config.max_datagram_size;
    peer_config.seed = random_seed()?;
    peer_config.overlay_name = config.overlay.clone();
    peer_config.chord = config.chord.chord_config();
    if let Some(enrolled) = &enrolled {
        peer_config.chord.id_hash = enrolled.config.id_hash.id_hash();
        span.in_scope(
            || info!(aor = %enrolled.identity.aor, not_after = enrolled.identity.not_after, "enrolled identity"),
        );
    }
    peer_config.advertised_addr = advertised_addr(listen, config.advertise, &config.join);
    config.registrar.apply_to(&mut peer_config);
    peer_config.stun_servers = resolve_stun_servers(&config.nat.stun).await;
    peer_config.nat_recheck_interval = std::time::Duration::from_secs(config.nat.recheck_interval_secs);
    // Every daemon asks for a dial-back before it joins (`nat::reachability`).
    peer_config.role = config.role;
    peer_config.client_keepalive = std::time::Duration::from_secs(config.nat.keepalive_secs);
    peer_config.proxy.max_clients = config.nat.max_clients;
    peer_config.proxy.flow_timer = std::time::Duration::from_secs(config.nat.keepalive_secs);
    peer_config.client_flow_tcp = config.nat.flow_transport == config::FlowTransport::Tcp;
    peer_config.dial_back = true;
    if config.media.anchor {
        let leg_ip = local_ip(listen, &config.join);
        let mut anchor = config.media.anchor_config(phone_facing_ip(proxy, leg_ip), leg_ip);
        anchor.turn = resolve_turn_servers(&config.nat.turn).await;
        peer_config.media = Some(anchor);
        span.in_scope(|| info!(%leg_ip, ports = ?(config.media.port_min, config.media.port_max), "media anchor on"));
    }
    let media_first_port = config.media.port_min.saturating_add((random_seed()? % 1000) as u16 * 2);
    let node_addr = peer_config.node_addr();
    let accounts = accounts::load(&data_dir)?;
    let started = Instant::now();
    let mut peer = Peer::new(peer_config, started);
    span.in_scope(|| info!(accounts = accounts.len(), "local accounts loaded"));
    peer.set_accounts(accounts);
    span.record("id", tracing::field::debug(peer.node_id()));
    span.in_scope(|| enable_storage(&mut peer, &config, enrolled.as_ref(), &data_dir, started))?;
    span.in_scope(|| {
        info!(node_id = %peer.node_id(), addr = %node_addr, overlay = %config.overlay, "overlay node");
        // Our own address in the list (a shared config file) would only bounce back to us.
        let bootstrap: Vec<SocketAddr> = config.join.iter().copied().filter(|a| *a != node_addr).collect();
        if !bootstrap.is_empty() {
            info!(join = ?bootstrap, "joining the overlay");
            peer.join(Instant::now(), bootstrap);
        }
    });
    // The local network: announced there, and, without --join, asked first (mDNS).
    let lan = if config.mdns && !node_addr.ip().is_loopback() {
        let id_hash = peer.chord().config().id_hash;
        match mdns::Lan::start(&config.overlay, peer.node_id(), id_hash, node_addr, false) {
            Ok(lan) => {
                span.in_scope(|| {
                    info!(service = crate::discovery::SERVICE_TYPE, "announced on the local network (mDNS)")
                });
                Some(lan)
            }
            Err(e) => {
                span.in_scope(|| warn!(error = %e, "not on the local network (mDNS)"));
                None
            }
        }
    } else {
        None
    };
    let deciding = (lan.is_some() && config.join.iter().all(|a| *a == node_addr))
        .then(|| crate::discovery::LanJoin::new(peer.node_id(), Instant::now()));

    let (query_tx, query_rx) = mpsc::channel(16);
    let (stop_http, http_stopped) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let token = crate::daemon::files::token::load_or_create(&data_dir, random_bytes()?)
        .map_err(|source| DaemonError::Io { doing: "write the API token file", source })?;
    let control =
        http::Control { token: token.into(), stop: std::sync::Arc::new(std::sync::Mutex::new(Some(stop_tx))) };
    let http = tokio::spawn(http::serve(http_listener, query_tx, control, http_stopped).instrument(span.clone()));
    // A `POST /shutdown` with the token stops the node as a signal does.
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            Ok(()) = stop_rx => info!("shutting down: asked through the local API"),
        }
    };

    let identity = enrolled.as_ref().map(status::IdentityStatus::of);
    let info = NodeInfo {
        listen,
        proxy,
        http: http_addr,
        domain: config.domain,
        join: config.join,
        data_dir,
        identity,
        stun_servers: config.nat.stun.clone(),
        turn_servers: config.nat.turn.iter().map(|t| t.uri.clone()).collect(),
    };
    // Calls to other SIP domains ask DNS (RFC 3263); without a resolver they get 404.
    let dns = match dns::resolver(&config.dns.servers) {
        Ok(r) => Some(std::sync::Arc::new(r)),
        Err(e) => {
            span.in_scope(|| warn!(error = %e, "no DNS: calls to other SIP domains will fail"));
            None
        }
    };
    let mut event_loop = EventLoop::new(peer, listeners, info, query_rx, media_first_port, dns);
    if let Some(lan) = lan {
        event_loop = event_loop.with_lan(lan, deciding);
    }
    let ran = event_loop.run(shutdown).instrument(span).await;

    let _ = stop_http.send(());
    // Open keep-alive connections may hold the server; they are cut when the runtime stops.
    let _ = tokio::time::timeout(HTTP_DRAIN, http).await;
    ran
}

/// Turns on signed storage when the data directory holds the overlay's root: records are kept
/// in `records.redb`, and an enrolled node publishes its own. An enrolled node's configuration
/// document sets R and the store limits (RFC 6940 §11.1: the overlay, not each node, decides).
fn enable_storage(
    peer: &mut Peer,
    config: &Config,
    enrolled: Option<&data_dir::Enrolled>,
    data_dir: &std::path::Path,
    started: Instant,
) -> Result<(), DaemonError> {
    let unix_now = unix_now();
    let files = identity_files::load(data_dir, unix_now).map_err(|e| DaemonError::Storage(e.to_string()))?;
    let Some(files) = files else {
        info!("no identity/root.pem in the data directory: storage is off");
        return Ok(());
    };
    let path = data_dir.join(crate::daemon::files::layout::RECORDS);
    let store = record_store::RedbStore::open(&path).map_err(|e| DaemonError::Storage(e.to_string()))?;
    let held = crate::store::Store::iter(&store).count();
    let aor = files.local.as_ref().map(|l| l.aor.to_string());
    let mut storage = config.storage.storage_config(unix_now);
    if let Some(enrolled) = enrolled {
        storage.replicas = enrolled.config.replicas.count();
        storage.policy = enrolled.config.store.store_policy();
        // Public numbers are 1…R; secret ones come from the salt only members were given.
        let numbers = enrolled
            .config
            .replicas
            .numbers(enrolled.replica_secret.as_deref())
            .map_err(|e| DaemonError::Storage(format!("replica numbers: {e}")))?;
        storage.replica_numbers = Some(numbers);
    }
    info!(records = held, aor = aor.as_deref().unwrap_or("(none)"), replicas = storage.replicas, "storage on");
    let ids = crate::identity::VerifiedCache::new(files.root, 1024);
    // The OS's randomness for the node's ECDSA signatures (the sans-IO core takes it as input).
    let rng: crate::identity::SharedRandom = std::sync::Arc::new(super::os_random());
    let mailbox = match &files.local {
        Some(local) => Some(mailbox_identity(local, data_dir, rng.clone(), unix_now)?),
        None => None,
    };
    let signer = files.local.map(|identity| crate::identity::Signer { identity, rng });
    peer.enable_storage(started, storage, Box::new(store), ids, signer);
    if let Some((identity, delivered)) = mailbox {
        info!(delivered = delivered.len(), "offline messages on (encryption key in identity/encryption.key)");
        peer.enable_mailbox(started, identity, crate::mailbox::MailboxConfig::default(), delivered);
        peer.enable_presence(config.presence.presence_config()?);
    }
    Ok(())
}

/// What the mailbox signs and opens with, and the delivery log kept so far: the enrolled key,
/// and the encryption key from the data directory (made at the first start).
fn mailbox_identity(
    local: &crate::identity::LocalIdentity,
    data_dir: &std::path::Path,
    rng: crate::identity::SharedRandom,
    unix_now: u64,
) -> Result<(crate::mailbox::MailboxIdentity, Vec<crate::mailbox::Delivered>), DaemonError> {
    let seed: [u8; 32] = ring::rand::generate(&*rng).map_err(|_| DaemonError::Random)?.expose();
    let encryption =
        files_mailbox::load_or_create_key(data_dir, seed).map_err(|e| DaemonError::Storage(e.to_string()))?;
    let delivered =
        files_mailbox::load_delivered(data_dir, unix_now).map_err(|e| DaemonError::Storage(e.to_string()))?;
    let key = crate::identity::KeyPair::from_pkcs8(local.key.pkcs8_der(), &*rng)
        .map_err(|e| DaemonError::Storage(format!("identity key: {e}")))?;
    let identity = crate::mailbox::MailboxIdentity {
        aor: local.aor.clone(),
        key,
        chain: local.chain.clone(),
        not_after: local.not_after,
        encryption,
        rng,
    };
    Ok((identity, delivered))
}

/// The addresses of the `stun:` URIs (validated at start), by DNS where they name a host: the
/// first address of each, IPv4 first. One that does not resolve is left out with a warning.
async fn resolve_stun_servers(uris: &[String]) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for uri in uris {
        let Ok((host, port)) = crate::nat::stun::parse_uri(uri) else { continue };
        let host_port = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let looked_up = tokio::net::lookup_host(host_port).await;
        match looked_up {
            Ok(addrs) => {
                let mut addrs: Vec<SocketAddr> = addrs.collect();
                addrs.sort_by_key(SocketAddr::is_ipv6);
                match addrs.first() {
                    Some(a) => servers.push(*a),
                    None => warn!(%uri, "STUN server has no address; left out"),
                }
            }
            Err(e) => warn!(%uri, error = %e, "STUN server does not resolve; left out"),
        }
    }
    servers
}

/// Where the anchor's relay ports for phones are bound and what the SDP handed to a phone
/// names: the proxy listener's address, or the node's own when the proxy listens on every
/// interface (an SDP cannot name 0.0.0.0: phones read it as hold, RFC 3264 §8.4).
fn phone_facing_ip(proxy: SocketAddr, leg_ip: IpAddr) -> IpAddr {
    if proxy.ip().is_unspecified() {
        leg_ip
    } else {
        proxy.ip()
    }
}

/// The node's own IP, where media legs are bound (their host candidate): `listen`'s when it
/// names one, else the one the OS would send from toward the first `join` peer (a connected
/// UDP socket sends nothing), else 127.0.0.1. Never the advertised address: behind a port
/// forward that is the router's.
fn local_ip(listen: SocketAddr, join: &[SocketAddr]) -> IpAddr {
    if !listen.ip().is_unspecified() {
        return listen.ip();
    }
    join.first().and_then(local_ip_toward).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn local_ip_toward(peer: &SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { "[::]:0".parse().ok()? };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// The TURN servers of `[nat] turn` with credentials, their addresses resolved (UDP only:
/// the anchor's legs are UDP sockets). One without credentials, over TCP, or that does not
/// resolve is left out with a warning.
async fn resolve_turn_servers(servers: &[crate::nat::turn::TurnServer]) -> Vec<crate::media::turn::TurnConfig> {
    let mut out = Vec::new();
    for s in servers {
        let Ok((host, port, transport)) = crate::nat::turn::parse_uri(&s.uri) else { continue };
        if transport != crate::nat::turn::TurnTransport::Udp {
            warn!(uri = %s.uri, "TURN over TCP is not used for media yet; left out");
            continue;
        }
        let (Some(username), Some(password)) = (s.username.clone(), s.password.clone()) else {
            warn!(uri = %s.uri, "TURN server without username and password; left out");
            continue;
        };
        let host_port = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        match tokio::net::lookup_host(host_port).await.map(|a| a.min_by_key(SocketAddr::is_ipv6)) {
            Ok(Some(server)) => out.push(crate::media::turn::TurnConfig { server, username, password }),
            _ => warn!(uri = %s.uri, "TURN server does not resolve; left out"),
        }
    }
    out
}

/// The overlay address to derive the Node ID from and to advertise, when it is not `listen`
/// itself: `advertise` if given; else, for a wildcard `listen`, the local IP the OS would send
/// from toward the first `join` peer (a connected UDP socket sends nothing), else 127.0.0.1.
fn advertised_addr(listen: SocketAddr, advertise: Option<SocketAddr>, join: &[SocketAddr]) -> Option<SocketAddr> {
    if advertise.is_some() || !listen.ip().is_unspecified() {
        return advertise;
    }
    let ip = join.first().and_then(local_ip_toward).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if join.is_empty() {
        warn!(%ip, "listening on a wildcard address with nothing to join: advertising {ip}; set --advertise");
    }
    Some(SocketAddr::new(ip, listen.port()))
}

/// 64 bits from the operating system: the peer derives its nonce key from this seed, a DNS
/// resolution its SRV order.
pub(super) fn random_seed() -> Result<u64, DaemonError> {
    Ok(u64::from_le_bytes(random_bytes()?))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], DaemonError> {
    Ok(ring::rand::generate(&ring::rand::SystemRandom::new()).map_err(|_| DaemonError::Random)?.expose())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_given_a_concrete_address() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(phone_facing_ip(a("127.0.0.1:5060"), lan), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(phone_facing_ip(a("0.0.0.0:5060"), lan), lan, "never 0.0.0.0 in an SDP");
    }

    #[test]
    fn advertised_address() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert_eq!(advertised_addr(a("127.0.0.2:5070"), None, &[]), None, "a specific listen address is used as is");
        assert_eq!(advertised_addr(a("0.0.0.0:5070"), Some(a("192.0.2.1:6000")), &[]), Some(a("192.0.2.1:6000")));
        assert_eq!(advertised_addr(a("0.0.0.0:5070"), None, &[]), Some(a("127.0.0.1:5070")));
        assert_eq!(advertised_addr(a("0.0.0.0:5070"), None, &[a("127.0.0.9:5070")]).map(|s| s.port()), Some(5070));
        let toward_loopback = advertised_addr(a("0.0.0.0:5070"), None, &[a("127.0.0.9:5070")]).unwrap();
        assert!(toward_loopback.ip().is_loopback(), "{toward_loopback}");
    }
}
