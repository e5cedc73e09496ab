//! The node's settings: the TOML file schema (`p2psip node --config FILE`), its defaults, and
//! how command-line flags override it.
//!
//! Unknown keys are rejected, so a typo does not silently fall back to a default. Reading the
//! file and creating the data directory are the only I/O here; parsing and merging are pure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::overlay::ChordConfig;

/// Everything `p2psip node` needs to start. Every key is optional in the file.
///
/// ```toml
/// listen = "0.0.0.0:5070"      # overlay (node-to-node) SIP, UDP and TCP
/// proxy = "127.0.0.1:5060"     # where local softphones register, UDP and TCP
/// http = "127.0.0.1:5090"      # status API
/// join = ["192.0.2.7:5070"]    # peers to join the overlay through
/// domain = "p2p.test"
/// max_datagram_size = 16384
/// data_dir = "/var/lib/p2psip"
/// overlay = "p2p.test"         # the overlay's name, carried in every DHT-PeerID
/// advertise = "192.0.2.8:5070" # the overlay address others reach us at (when listen is 0.0.0.0)
///
/// [chord]                      # Chord timers; defaults are ChordConfig's
/// stabilize_interval_ms = 5000
/// stabilize_max_interval_ms = 30000 # quiet rounds double the period up to this (= stabilize_interval_ms: fixed)
/// stabilize_quiet_hold_ms = 60000  # ...once the neighbourhood has been quiet this long
/// check_predecessor_interval_ms = 5000
/// fix_fingers_interval_ms = 30000
/// rpc_timeout_ms = 2000
/// join_retry_interval_ms = 10000
/// successor_list_len = 8
///
/// [registrar]                  # the phone-facing registrar and proxy
/// ping_interval_ms = 30000     # OPTIONS to each registered phone this often
/// ping_timeout_ms = 8000       # a phone silent this long after a ping is unregistered
/// timer_c_ms = 185000          # Timer C: an INVITE branch ringing this long is cancelled (RFC 3261 §16.8)
/// min_expires = 60             # shorter registrations get 423 Interval Too Brief
/// max_expires = 3600           # longer ones are cut to this
/// max_server_transactions = 20000  # beyond this, new requests get 503 with Retry-After
/// overload_busy_percent = 90   # above this busy share of the loop, new requests are shed with 503; 0: off
/// digest_algorithms = ["MD5"]  # offered in REGISTER challenges, in order; add "SHA-256"
/// [storage]                    # signed records (on when data_dir has identity/root.pem)
/// replicas = 3                 # R: records live at H(K), H(K‖1) … H(K‖R)
/// backups = 2                  # each place's holder's next 2 successors keep a copy too
/// record_lifetime_secs = 3600  # how long this node's own records live
/// refresh_interval_secs = 1200 # how often it re-publishes them
/// [nat]                        # learning the public address (RFC 8489 STUN)
/// stun = ["stun:stun.example.net"]  # servers to ask; two tell the NAT's mapping apart
/// turn = [{ uri = "turn:turn.example.net", username = "u", password = "p" }]  # for calls' media
/// recheck_interval_secs = 300  # how often they are asked again
/// keepalive_secs = 25          # a client's STUN keep-alive toward its edge (RFC 5626)
/// max_clients = 200            # clients this node serves as their edge; more get 503
/// flow_transport = "udp"       # a client's flow to its edge: "udp" or "tcp" (UDP blocked)
/// [media]                      # the media anchor (docs/media-security.md)
/// anchor = true                # carry calls' media between nodes over ICE, encrypted; false: SDP untouched
/// port_min = 20000             # relay ports for phones, an even/odd pair per stream
/// port_max = 29999
/// max_calls = 32               # calls anchored at once; more get 503
/// idle_timeout_secs = 60       # no media either way this long ends a call's relay
/// ice = "rtc-ice"              # the ICE agent: "rtc-ice" or "is" (str0m's), to compare them
/// [presence]                   # our user's presence (RFC 3856) and our phones' buddies
/// allow = ["sip:carol@p2p.test"]  # may watch our user even if our phones do not watch them
/// remote_expires_secs = 600    # our subscriptions to buddies' nodes (a dead node is seen within this)
/// retry_min_secs = 30          # first wait before trying an unreachable buddy again (doubling)
/// retry_max_secs = 300         # the longest wait
/// [dns]                        # calls to other SIP domains (RFC 3263)
/// servers = ["192.0.2.53:53"]  # name servers to ask; none: the system's (/etc/resolv.conf)
/// ```
/// and at the top level `role = "auto"` (`peer`, `client`): see `--role`; `mdns = true`
/// (`false`: `--no-mdns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Overlay (node-to-node) SIP address, UDP and TCP.
    pub listen: SocketAddr,
    /// Softphone-facing proxy address, UDP and TCP.
    pub proxy: SocketAddr,
    /// Local HTTP status API address.
    pub http: SocketAddr,
    /// Known nodes to join the overlay through.
    pub join: Vec<SocketAddr>,
    /// The SIP domain local phones register in.
    pub domain: String,
    /// UDP datagrams larger than this are dropped unread.
    pub max_datagram_size: usize,
    /// Where the node keeps its state; `$XDG_DATA_HOME/p2psip` when unset.
    pub data_dir: Option<PathBuf>,
    /// The overlay's name; requests naming another overlay are refused.
    pub overlay: String,
    /// The overlay address other nodes reach this one at, from which its Node ID derives.
    /// Needed only when `listen` is a wildcard address; see `daemon::advertised_addr`.
    pub advertise: Option<SocketAddr>,
    /// Chord's timers.
    pub chord: ChordSettings,
    /// The registrar's and proxy's limits (`[registrar]`).
    pub registrar: RegistrarSettings,
    /// Replicas and the lifetime of this node's own records.
    pub storage: StorageSettings,
    /// STUN servers and how often they are asked (`[nat]`).
    pub nat: NatSettings,
    /// `auto` (a peer if others can reach it, else a client), `peer` or `client`.
    pub role: crate::nat::reachability::RoleChoice,
    /// The media anchor (`[media]`).
    pub media: MediaSettings,
    /// Presence (`[presence]`).
    pub presence: PresenceSettings,
    /// DNS for calls to other SIP domains (`[dns]`).
    pub dns: DnsSettings,
    /// Announce the node on the local network and, without `join`, look for nodes of its
    /// overlay there first (mDNS, `crate::discovery`).
    pub mdns: bool,
}

/// The `[dns]` table: where the names of other SIP domains are asked (RFC 3263).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSettings {
    /// Name servers (address and port), asked over UDP and TCP; empty: the system's.
    pub servers: Vec<SocketAddr>,
}

/// The `[presence]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSettings {
    /// Watchers allowed to see our user's presence besides the buddies our phones watch.
    pub allow: Vec<String>,
    /// How long our subscriptions to buddies' nodes last, seconds.
    pub remote_expires_secs: u32,
    /// First wait before trying an unreachable buddy again, seconds.
    pub retry_min_secs: u64,
    /// Longest wait between tries, seconds.
    pub retry_max_secs: u64,
}

impl Default for PresenceSettings {
    fn default() -> PresenceSettings {
        let d = crate::presence::PresenceConfig::default();
        PresenceSettings {
            allow: Vec::new(),
            remote_expires_secs: d.remote_expires,
            retry_min_secs: d.retry_min.as_secs(),
            retry_max_secs: d.retry_max.as_secs(),
        }
    }
}

impl PresenceSettings {
    /// The presence service's settings.
    pub fn presence_config(&self) -> Result<crate::presence::PresenceConfig, ConfigError> {
        let allow = self
            .allow
            .iter()
            .map(|a| {
                crate::identity::Aor::parse(a).map_err(|e| ConfigError::Invalid {
                    key: "presence.allow",
                    message: format!("{a:?} is not an AoR: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let d = crate::presence::PresenceConfig::default();
        if !(d.min_expires..=d.max_expires).contains(&self.remote_expires_secs) {
            return Err(ConfigError::Invalid {
                key: "presence.remote_expires_secs",
                message: format!("{} is not between {} and {}", self.remote_expires_secs, d.min_expires, d.max_expires),
            });
        }
        if !(1..=86_400).contains(&self.retry_min_secs) || self.retry_max_secs < self.retry_min_secs {
            return Err(ConfigError::Invalid {
                key: "presence.retry_min_secs",
                message: format!(
                    "{}..{} is not a range of seconds from 1 to 86400",
                    self.retry_min_secs, self.retry_max_secs
                ),
            });
        }
        Ok(crate::presence::PresenceConfig {
            allow,
            remote_expires: self.remote_expires_secs,
            retry_min: Duration::from_secs(self.retry_min_secs),
            retry_max: Duration::from_secs(self.retry_max_secs),
            ..d
        })
    }
}

/// The `[media]` table: the media anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSettings {
    /// Whether calls across the overlay are anchored (ICE between nodes, encrypted).
    pub anchor: bool,
    /// The lowest relay port for phones.
    pub port_min: u16,
    /// The highest.
    pub port_max: u16,
    /// Calls anchored at once.
    pub max_calls: usize,
    /// No media either way for this long ends a call's relay, seconds.
    pub idle_timeout_secs: u64,
    /// The ICE agent: `rtc-ice` (the default) or `is` (str0m's), for comparing them.
    pub ice: crate::media::ice::AgentKind,
}

impl Default for MediaSettings {
    fn default() -> MediaSettings {
        let d = crate::media::anchor::AnchorConfig::new([127, 0, 0, 1].into(), [127, 0, 0, 1].into());
        MediaSettings {
            anchor: true,
            port_min: d.port_range.0,
            port_max: d.port_range.1,
            max_calls: d.max_calls,
            idle_timeout_secs: d.idle_timeout.as_secs(),
            ice: d.agent,
        }
    }
}

impl MediaSettings {
    /// The anchor's configuration for phones on `phone_ip` and legs on `leg_ip`.
    pub fn anchor_config(
        &self,
        phone_ip: std::net::IpAddr,
        leg_ip: std::net::IpAddr,
    ) -> crate::media::anchor::AnchorConfig {
        crate::media::anchor::AnchorConfig {
            port_range: (self.port_min, self.port_max),
            max_calls: self.max_calls,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            agent: self.ice,
            ..crate::media::anchor::AnchorConfig::new(phone_ip, leg_ip)
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.port_min < 1024 || self.port_max <= self.port_min.saturating_add(2) {
            return Err(ConfigError::Invalid {
                key: "media.port_min",
                message: format!(
                    "{}-{} is not a range of at least two port pairs above 1023",
                    self.port_min, self.port_max
                ),
            });
        }
        if !(1..=1000).contains(&self.max_calls) {
            return Err(ConfigError::Invalid {
                key: "media.max_calls",
                message: format!("{} is not between 1 and 1000", self.max_calls),
            });
        }
        if !(5..=86_400).contains(&self.idle_timeout_secs) {
            return Err(ConfigError::Invalid {
                key: "media.idle_timeout_secs",
                message: format!("{} is not between 5 and 86400", self.idle_timeout_secs),
            });
        }
        Ok(())
    }
}

/// The `[nat]` table: how the node learns its public address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatSettings {
    /// STUN servers, `stun:HOST[:PORT]` (RFC 7064); the overlay document's when empty.
    pub stun: Vec<String>,
    /// TURN servers with their credentials (`turn = [{ uri = "turn:HOST:PORT", username =
    /// "…", password = "…" }]`); the overlay document's URIs, without credentials, when empty.
    pub turn: Vec<crate::nat::turn::TurnServer>,
    /// How often they are asked again, seconds.
    pub recheck_interval_secs: u64,
    /// A client's STUN keep-alive toward its edge peer, seconds (RFC 5626 §4.4.2); as an edge,
    /// the interval it asks of its clients (`Flow-Timer`), three of which unheard unbind one.
    pub keepalive_secs: u64,
    /// How many clients this node serves as their edge peer; beyond it, 503.
    pub max_clients: usize,
    /// A client's flow to its edge: `udp` (STUN keep-alives) or `tcp` (CRLF keep-alives,
    /// where UDP is blocked).
    pub flow_transport: FlowTransport,
}

/// The transport of a client's flow to its edge (`[nat] flow_transport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowTransport {
    /// UDP, kept alive by STUN (RFC 5626 §4.4.2).
    #[default]
    Udp,
    /// TCP, kept alive by CRLF pings (§4.4.1).
    Tcp,
}

impl Default for NatSettings {
    fn default() -> NatSettings {
        NatSettings {
            stun: Vec::new(),
            turn: Vec::new(),
            recheck_interval_secs: 300,
            keepalive_secs: crate::nat::flow::DEFAULT_KEEPALIVE.as_secs(),
            max_clients: crate::proxy::DEFAULT_MAX_CLIENTS,
            flow_transport: FlowTransport::Udp,
        }
    }
}

/// The `[registrar]` table: the phone-facing registrar's and proxy's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarSettings {
    /// How often each registered phone gets an OPTIONS ping.
    pub ping_interval_ms: u64,
    /// A phone that has not answered a ping after this long is unregistered.
    pub ping_timeout_ms: u64,
    /// Timer C of the proxy's INVITE branches (RFC 3261 §16.6 step 11).
    pub timer_c_ms: u64,
    /// The shortest registration accepted, seconds (shorter gets 423, §10.3 step 7).
    pub min_expires: u32,
    /// The longest registration granted, seconds.
    pub max_expires: u32,
    /// Unanswered server transactions per listener before new requests get 503.
    pub max_server_transactions: usize,
    /// The loop's busy share (percent) above which new requests are shed; 0 turns it off.
    pub overload_busy_percent: u8,
    /// The digest algorithms a challenge offers, in order (`MD5`, `SHA-256`).
    pub digest_algorithms: Vec<String>,
}

impl Default for RegistrarSettings {
    fn default() -> RegistrarSettings {
        let d = crate::peer::PeerConfig::new(([127, 0, 0, 1], 0).into(), ([127, 0, 0, 1], 0).into());
        RegistrarSettings {
            ping_interval_ms: d.proxy.ping_interval.as_millis() as u64,
            ping_timeout_ms: d.proxy.ping_timeout.as_millis() as u64,
            timer_c_ms: d.proxy.timer_c.as_millis() as u64,
            min_expires: d.proxy.registrar.min_expires,
            max_expires: d.proxy.registrar.max_expires,
            max_server_transactions: d.max_server_transactions,
            overload_busy_percent: d.overload_busy_percent,
            digest_algorithms: d.proxy.digest_algorithms.iter().map(|a| a.name().to_owned()).collect(),
        }
    }
}

/// The `[storage]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// R: copies beyond the primary (an enrolled node takes the document's).
    pub replicas: u8,
    /// b: successors of each place's holder that keep a backup copy.
    pub backups: u8,
    /// How long this node's own records live.
    pub record_lifetime_secs: u64,
    /// How often this node re-publishes its own records.
    pub refresh_interval_secs: u64,
}

impl Default for StorageSettings {
    fn default() -> StorageSettings {
        let d = crate::peer::StorageConfig::default();
        StorageSettings {
            replicas: d.replicas,
            backups: d.backups,
            record_lifetime_secs: d.record_lifetime.as_secs(),
            refresh_interval_secs: d.refresh_interval.as_secs(),
        }
    }
}

impl RegistrarSettings {
    /// Writes these settings into a peer's configuration.
    pub fn apply_to(&self, c: &mut crate::peer::PeerConfig) {
        c.proxy.ping_interval = Duration::from_millis(self.ping_interval_ms);
        c.proxy.ping_timeout = Duration::from_millis(self.ping_timeout_ms);
        c.proxy.timer_c = Duration::from_millis(self.timer_c_ms);
        c.proxy.registrar.min_expires = self.min_expires;
        c.proxy.registrar.max_expires = self.max_expires;
        c.proxy.registrar.default_expires = c.proxy.registrar.default_expires.clamp(self.min_expires, self.max_expires);
        c.max_server_transactions = self.max_server_transactions;
        c.overload_busy_percent = self.overload_busy_percent;
        c.proxy.digest_algorithms = self
            .digest_algorithms
            .iter()
            .filter_map(|a| crate::proxy::digest::Algorithm::from_param(Some(a)))
            .collect();
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("registrar.ping_interval_ms", self.ping_interval_ms),
            ("registrar.ping_timeout_ms", self.ping_timeout_ms),
            ("registrar.timer_c_ms", self.timer_c_ms),
        ] {
            if !(10..=3_600_000).contains(&value) {
                return Err(ConfigError::Invalid { key, message: format!("{value} is not between 10 and 3600000") });
            }
        }
        if self.min_expires == 0 || self.min_expires > self.max_expires {
            return Err(ConfigError::Invalid {
                key: "registrar.min_expires",
                message: format!(
                    "{} must be at least 1 and at most max_expires ({})",
                    self.min_expires, self.max_expires
                ),
            });
        }
        let known = |a: &String| crate::proxy::digest::Algorithm::from_param(Some(a)).is_some();
        if self.digest_algorithms.is_empty() || !self.digest_algorithms.iter().all(known) {
            return Err(ConfigError::Invalid {
                key: "registrar.digest_algorithms",
                message: format!("{:?}: give one or more of \"MD5\", \"SHA-256\"", self.digest_algorithms),
            });
        }
        if self.overload_busy_percent > 100 {
            return Err(ConfigError::Invalid {
                key: "registrar.overload_busy_percent",
                message: format!("{} is not between 0 (off) and 100", self.overload_busy_percent),
            });
        }
        if self.max_server_transactions == 0 {
            return Err(ConfigError::Invalid {
                key: "registrar.max_server_transactions",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl StorageSettings {
    /// The peer's storage configuration, with `unix_at_start` the wall clock at start.
    pub fn storage_config(&self, unix_at_start: u64) -> crate::peer::StorageConfig {
        crate::peer::StorageConfig {
            replicas: self.replicas,
            backups: self.backups,
            record_lifetime: Duration::from_secs(self.record_lifetime_secs),
            refresh_interval: Duration::from_secs(self.refresh_interval_secs),
            unix_at_start,
            ..crate::peer::StorageConfig::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(0..=16).contains(&self.replicas) {
            return Err(ConfigError::Invalid {
                key: "storage.replicas",
                message: format!("{} is not between 0 and 16", self.replicas),
            });
        }
        if self.backups > 4 {
            return Err(ConfigError::Invalid {
                key: "storage.backups",
                message: format!("{} is not between 0 and 4", self.backups),
            });
        }
        let max_lifetime = crate::store::StorePolicy::default().max_lifetime;
        if !(60..=max_lifetime).contains(&self.record_lifetime_secs) {
            return Err(ConfigError::Invalid {
                key: "storage.record_lifetime_secs",
                message: format!("{} is not between 60 and {max_lifetime}", self.record_lifetime_secs),
            });
        }
        if self.refresh_interval_secs == 0 || self.refresh_interval_secs >= self.record_lifetime_secs {
            return Err(ConfigError::Invalid {
                key: "storage.refresh_interval_secs",
                message: format!(
                    "{} must be above 0 and below record_lifetime_secs ({})",
                    self.refresh_interval_secs, self.record_lifetime_secs
                ),
            });
        }
        Ok(())
    }
}

/// The `[chord]` table: the Chord core's tunables, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChordSettings {
    /// The stabilize period while the neighbourhood changes.
    pub stabilize_interval_ms: u64,
    /// The longest period quiet rounds stretch it to (adaptive stabilize).
    pub stabilize_max_interval_ms: u64,
    /// How long the neighbourhood must stay quiet before the period stretches.
    pub stabilize_quiet_hold_ms: u64,
    /// How often the predecessor is pinged.
    pub check_predecessor_interval_ms: u64,
    /// How often one finger is refreshed.
    pub fix_fingers_interval_ms: u64,
    /// How long an overlay RPC may take before it counts as failed.
    pub rpc_timeout_ms: u64,
    /// How long a failed join waits before it tries again.
    pub join_retry_interval_ms: u64,
    /// r, the successor list's length.
    pub successor_list_len: usize,
}

impl Default for ChordSettings {
    fn default() -> ChordSettings {
        let d = ChordConfig::default();
        let ms = |d: Duration| d.as_millis() as u64;
        ChordSettings {
            stabilize_interval_ms: ms(d.stabilize_interval),
            stabilize_max_interval_ms: ms(d.stabilize_max_interval),
            stabilize_quiet_hold_ms: ms(d.stabilize_quiet_hold),
            check_predecessor_interval_ms: ms(d.check_predecessor_interval),
            fix_fingers_interval_ms: ms(d.fix_fingers_interval),
            rpc_timeout_ms: ms(d.rpc_timeout),
            join_retry_interval_ms: ms(d.join_retry_interval),
            successor_list_len: d.successor_list_len,
        }
    }
}

impl ChordSettings {
    /// The core's configuration: these timers over [`ChordConfig`]'s other defaults.
    pub fn chord_config(&self) -> ChordConfig {
        let ms = Duration::from_millis;
        ChordConfig {
            stabilize_interval: ms(self.stabilize_interval_ms),
            // Never shorter than the minimum (a config that sets only the minimum gets a
            // fixed period if it is above the default maximum).
            stabilize_max_interval: ms(self.stabilize_max_interval_ms.max(self.stabilize_interval_ms)),
            stabilize_quiet_hold: ms(self.stabilize_quiet_hold_ms),
            check_predecessor_interval: ms(self.check_predecessor_interval_ms),
            fix_fingers_interval: ms(self.fix_fingers_interval_ms),
            rpc_timeout: ms(self.rpc_timeout_ms),
            join_retry_interval: ms(self.join_retry_interval_ms),
            successor_list_len: self.successor_list_len,
            ..ChordConfig::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let timers = [
            ("chord.stabilize_interval_ms", self.stabilize_interval_ms),
            ("chord.stabilize_max_interval_ms", self.stabilize_max_interval_ms),
            ("chord.check_predecessor_interval_ms", self.check_predecessor_interval_ms),
            ("chord.fix_fingers_interval_ms", self.fix_fingers_interval_ms),
            ("chord.rpc_timeout_ms", self.rpc_timeout_ms),
            ("chord.join_retry_interval_ms", self.join_retry_interval_ms),
        ];
        for (key, value) in timers {
            // A zero period would spin the event loop.
            if !(10..=3_600_000).contains(&value) {
                return Err(ConfigError::Invalid { key, message: format!("{value} is not between 10 and 3600000") });
            }
        }
        if !(1..=64).contains(&self.successor_list_len) {
            return Err(ConfigError::Invalid {
                key: "chord.successor_list_len",
                message: format!("{} is not between 1 and 64", self.successor_list_len),
            });
        }
        Ok(())
    }
}

/// The overlay listener when nothing says otherwise: every interface, SIP's port 5070.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:5070";
/// The proxy listener: this machine only, SIP's port 5060.
pub const DEFAULT_PROXY: &str = "127.0.0.1:5060";
/// The HTTP status API and page: this machine only.
pub const DEFAULT_HTTP: &str = "127.0.0.1:5090";
/// The SIP domain of phones registering without enrollment.
pub const DEFAULT_DOMAIN: &str = "p2p.test";
/// The overlay's name without enrollment.
pub const DEFAULT_OVERLAY: &str = "p2p.test";
/// Datagrams larger than this are dropped unread.
pub const DEFAULT_MAX_DATAGRAM_SIZE: usize = 16 * 1024;
/// The UDP receive buffer's size: no datagram (IPv6 jumbograms aside) is larger.
pub const MAX_DATAGRAM_SIZE_LIMIT: usize = 65_535;

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5070)),
            proxy: SocketAddr::from(([127, 0, 0, 1], 5060)),
            http: SocketAddr::from(([127, 0, 0, 1], 5090)),
            join: Vec::new(),
            domain: DEFAULT_DOMAIN.into(),
            max_datagram_size: DEFAULT_MAX_DATAGRAM_SIZE,
            data_dir: None,
            overlay: DEFAULT_OVERLAY.into(),
            advertise: None,
            chord: ChordSettings::default(),
            registrar: RegistrarSettings::default(),
            storage: StorageSettings::default(),
            nat: NatSettings::default(),
            role: crate::nat::reachability::RoleChoice::Auto,
            media: MediaSettings::default(),
            presence: PresenceSettings::default(),
            dns: DnsSettings::default(),
            mdns: true,
        }
    }
}

/// Settings given on the command line; each one that is set replaces the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--proxy`.
    pub proxy: Option<SocketAddr>,
    /// `--http`.
    pub http: Option<SocketAddr>,
    /// `--join`: replaces the file's list when not empty.
    pub join: Vec<SocketAddr>,
    /// `--domain`.
    pub domain: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--overlay`.
    pub overlay: Option<String>,
    /// `--advertise`.
    pub advertise: Option<SocketAddr>,
    /// `--stun`: replaces the file's list when not empty.
    pub stun: Vec<String>,
    /// `--turn` with `--turn-user` and `--turn-pass`: replaces the file's list when not empty.
    pub turn: Vec<crate::nat::turn::TurnServer>,
    /// `--role`.
    pub role: Option<crate::nat::reachability::RoleChoice>,
    /// `--no-mdns`: sets `mdns = false`.
    pub no_mdns: bool,
}

/// Why the settings could not be used; one line, naming the file or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid config file {} (line {line}, column {column}): {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where, from 1.
        line: usize,
        /// Where in the line, from 1.
        column: usize,
        /// What the parser says.
        message: String,
    },
    /// A setting out of range.
    #[error("invalid setting {key}: {message}")]
    Invalid {
        /// The setting, as `table.key`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No `--data-dir` and no home directory to put the default one in.
    #[error("cannot find a home directory for the default data directory; pass --data-dir")]
    NoDataDir,
    /// The data directory could not be created.
    #[error("cannot create data directory {}", path.display())]
    CreateDataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml(&text, path)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_column(text, s.start)).unwrap_or((1, 1));
            // One line: the error goes to a terminal as a single `error:` line.
            let message = e.message().trim().replace('\n', "; ");
            ConfigError::Parse { path: path.to_owned(), line, column, message }
        })
    }

    /// Replaces each setting the command line gave.
    pub fn apply(&mut self, o: Overrides) {
        if let Some(a) = o.listen {
            self.listen = a;
        }
        if let Some(a) = o.proxy {
            self.proxy = a;
        }
        if let Some(a) = o.http {
            self.http = a;
        }
        if !o.join.is_empty() {
            self.join = o.join;
        }
        if o.no_mdns {
            self.mdns = false;
        }
        if let Some(d) = o.domain {
            self.domain = d;
        }
        if let Some(d) = o.data_dir {
            self.data_dir = Some(d);
        }
        if let Some(n) = o.overlay {
            self.overlay = n;
        }
        if let Some(a) = o.advertise {
            self.advertise = Some(a);
        }
        if !o.stun.is_empty() {
            self.nat.stun = o.stun;
        }
        if !o.turn.is_empty() {
            self.nat.turn = o.turn;
        }
        if let Some(role) = o.role {
            self.role = role;
        }
    }

    /// Takes the overlay's settings from its signed configuration document: overlay name,
    /// domain, Chord timers, and the bootstrap peers when no `join` is set. Applied after the
    /// file and before the command-line flags, so flags win.
    pub fn apply_document(&mut self, doc: &crate::enrollment::config_doc::ConfigDoc) {
        self.overlay = doc.overlay.clone();
        self.domain = doc.domain.clone();
        let c = &doc.chord;
        self.chord = ChordSettings {
            stabilize_interval_ms: c.stabilize_interval_ms,
            check_predecessor_interval_ms: c.check_predecessor_interval_ms,
            fix_fingers_interval_ms: c.fix_fingers_interval_ms,
            rpc_timeout_ms: c.rpc_timeout_ms,
            join_retry_interval_ms: c.join_retry_interval_ms,
            successor_list_len: c.successor_list_len,
            // Not in the document (version 1): the node's own setting stays.
            stabilize_max_interval_ms: self.chord.stabilize_max_interval_ms,
            stabilize_quiet_hold_ms: self.chord.stabilize_quiet_hold_ms,
        };
        if self.join.is_empty() {
            self.join = doc.bootstrap.clone();
        }
        if self.nat.stun.is_empty() {
            self.nat.stun = doc.stun_servers.clone();
        }
        if self.nat.turn.is_empty() {
            // The document is public: credentials come from the node's own settings only.
            self.nat.turn = doc
                .turn_servers
                .iter()
                .map(|uri| crate::nat::turn::TurnServer { uri: uri.clone(), username: None, password: None })
                .collect();
        }
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for uri in &self.nat.stun {
            crate::nat::stun::parse_uri(uri).map_err(|message| ConfigError::Invalid { key: "nat.stun", message })?;
        }
        for server in &self.nat.turn {
            crate::nat::turn::parse_uri(&server.uri)
                .map_err(|message| ConfigError::Invalid { key: "nat.turn", message })?;
        }
        if !(1..=3_600).contains(&self.nat.keepalive_secs) {
            return Err(ConfigError::Invalid {
                key: "nat.keepalive_secs",
                message: format!("{} is not between 1 and 3600", self.nat.keepalive_secs),
            });
        }
        if !(1..=86_400).contains(&self.nat.recheck_interval_secs) {
            return Err(ConfigError::Invalid {
                key: "nat.recheck_interval_secs",
                message: format!("{} is not between 1 and 86400", self.nat.recheck_interval_secs),
            });
        }
        if !(1..=MAX_DATAGRAM_SIZE_LIMIT).contains(&self.max_datagram_size) {
            return Err(ConfigError::Invalid {
                key: "max_datagram_size",
                message: format!("{} is not between 1 and {MAX_DATAGRAM_SIZE_LIMIT}", self.max_datagram_size),
            });
        }
        if self.domain.is_empty() || self.domain.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(ConfigError::Invalid {
                key: "domain",
                message: format!("{:?} is not a domain name", self.domain),
            });
        }
        if self.overlay.is_empty() || self.overlay.contains(|c: char| c.is_whitespace() || matches!(c, ';' | '"' | ','))
        {
            return Err(ConfigError::Invalid {
                key: "overlay",
                message: format!("{:?} is not an overlay name", self.overlay),
            });
        }
        if let Some(a) = self.advertise {
            if a.ip().is_unspecified() || a.port() == 0 {
                return Err(ConfigError::Invalid {
                    key: "advertise",
                    message: format!("{a} is not a reachable address"),
                });
            }
        }
        self.chord.validate()?;
        self.registrar.validate()?;
        self.storage.validate()?;
        self.presence.presence_config()?;
        self.media.validate()
    }

    /// The data directory: the configured one, else `$XDG_DATA_HOME/p2psip`.
    pub fn data_dir(&self) -> Result<PathBuf, ConfigError> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => directories::ProjectDirs::from("", "", "p2psip")
                .map(|p| p.data_dir().to_owned())
                .ok_or(ConfigError::NoDataDir),
        }
    }

    /// Creates the data directory if it is missing and returns it.
    pub fn create_data_dir(&self) -> Result<PathBuf, ConfigError> {
        let path = self.data_dir()?;
        std::fs::create_dir_all(&path).map_err(|source| ConfigError::CreateDataDir { path: path.clone(), source })?;
        Ok(path)
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn stun_servers_come_from_the_flag_the_file_or_else_the_document() {
        let doc = {
            let mut d = crate::enrollment::config_doc::ConfigDoc::new("p2p.test", b"not used", 0, 1);
            d.stun_servers = vec!["stun:192.0.2.9".into()];
            d
        };
        let mut c = parse("[nat]\nstun = [\"stun:198.51.100.1:3478\"]\nrecheck_interval_secs = 60\n").unwrap();
        c.validate().unwrap();
        c.apply_document(&doc);
        assert_eq!(c.nat.stun, ["stun:198.51.100.1:3478"], "the node's own list wins");
        c.apply(Overrides { stun: vec!["stun:203.0.113.5".into()], ..Overrides::default() });
        assert_eq!(c.nat.stun, ["stun:203.0.113.5"], "--stun replaces the file's");
        let mut c = parse("").unwrap();
        c.apply_document(&doc);
        assert_eq!(c.nat.stun, ["stun:192.0.2.9"], "the document's when the node has none");
        let bad = parse("[nat]\nstun = [\"stun.example.net\"]\n").unwrap();
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid { key: "nat.stun", .. })));
    }

    #[test]
    fn turn_servers_keep_their_credentials_local() {
        let c = parse("[nat]\nturn = [{ uri = \"turn:198.51.100.2\", username = \"u\", password = \"p\" }]\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.nat.turn[0].username.as_deref(), Some("u"));
        let mut doc = crate::enrollment::config_doc::ConfigDoc::new("p2p.test", b"not used", 0, 1);
        doc.turn_servers = vec!["turn:192.0.2.9?transport=tcp".into()];
        let mut c = parse("").unwrap();
        c.apply_document(&doc);
        assert_eq!(c.nat.turn.len(), 1);
        assert_eq!(
            (c.nat.turn[0].uri.as_str(), c.nat.turn[0].password.as_deref()),
            ("turn:192.0.2.9?transport=tcp", None)
        );
        let bad = parse("[nat]\nturn = [{ uri = \"turns:x.example\" }]\n").unwrap();
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid { key: "nat.turn", .. })));
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        let d = Config::default();
        assert_eq!(d.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(d.proxy.to_string(), DEFAULT_PROXY);
        assert_eq!(d.http.to_string(), DEFAULT_HTTP);
    }

    #[test]
    fn file_values_and_overrides() {
        let mut c = parse(
            "listen = \"127.0.0.1:6000\"\njoin = [\"10.0.0.1:5070\"]\ndomain = \"example.org\"\n\
             max_datagram_size = 1500\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.max_datagram_size, 1500);
        c.apply(Overrides { listen: Some("127.0.0.2:7000".parse().unwrap()), ..Overrides::default() });
        assert_eq!(c.listen, "127.0.0.2:7000".parse().unwrap());
        assert_eq!(c.join, vec!["10.0.0.1:5070".parse().unwrap()], "an empty --join keeps the file's list");
        assert_eq!(c.domain, "example.org");
        c.apply(Overrides { join: vec!["10.0.0.2:5070".parse().unwrap()], ..Overrides::default() });
        assert_eq!(c.join, vec!["10.0.0.2:5070".parse().unwrap()]);
    }

    #[test]
    fn errors_are_one_line_with_a_position() {
        let e = parse("listen = \"127.0.0.1:6000\"\nlisen = 1\n").unwrap_err().to_string();
        assert!(e.contains("line 2, column 1") && e.contains("unknown field `lisen`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse("listen = \"nonsense\"").unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
        let e = parse("listen = [").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn validation() {
        let mut c = Config { max_datagram_size: 0, ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("max_datagram_size"));
        c.max_datagram_size = 70_000;
        assert!(c.validate().is_err());
        c.max_datagram_size = 1300;
        c.domain = String::new();
        assert!(c.validate().unwrap_err().to_string().contains("domain"));
        let mut c = Config::default();
        c.chord.stabilize_interval_ms = 0;
        assert!(c.validate().unwrap_err().to_string().contains("chord.stabilize_interval_ms"));
    }

    #[test]
    fn chord_table_overrides_the_core_defaults() {
        let c = parse("overlay = \"lab\"\n[chord]\nstabilize_interval_ms = 500\nrpc_timeout_ms = 250\n").unwrap();
        assert_eq!(c.overlay, "lab");
        let chord = c.chord.chord_config();
        assert_eq!(chord.stabilize_interval, Duration::from_millis(500));
        assert_eq!(chord.rpc_timeout, Duration::from_millis(250));
        assert_eq!(chord.fix_fingers_interval, ChordConfig::default().fix_fingers_interval);
        assert_eq!(Config::default().chord.chord_config(), ChordConfig::default());
        assert!(parse("[chord]\nstabilize = 1\n").is_err(), "unknown chord keys are rejected");
    }
}
