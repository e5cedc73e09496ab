//! p2psip: a peer-to-peer SIP softphone daemon. Nodes form a Chord ring whose maintenance
//! messages are SIP requests (SOSIMPLE / dSIP style); ordinary softphones register with their
//! local node's proxy and call each other with no SIP server anywhere.
//!
//! # Layout
//! - [`addr`]: address classes every layer shares: allowed next hops, sources grouped by /64.
//! - [`sip`]: messages, parsing, framing, validation, transactions (RFC 3261). Sans-IO.
//! - [`transport`]: listeners, transports, connections and endpoints, shared by `peer` and `proxy`.
//! - [`encoding`]: bytes written as hex text, and read back.
//! - [`nat`]: STUN, address discovery, reachability and the client role, TURN servers. Sans-IO.
//! - [`netem`]: the one link model of the simulated networks (latency ± jitter, loss).
//! - [`histogram`]: fixed-bucket histograms sans-IO code fills (lookup hops and times).
//! - [`discovery`]: LAN discovery: the mDNS announcement and the join-or-start decision. Sans-IO.
//! - [`outbound`]: RFC 3263: where another SIP domain's server is, from DNS answers. Sans-IO.
//! - [`overlay`]: the Chord ring: Node IDs, finger table, successor list, maintenance, lookups. Sans-IO.
//! - [`identity`]: AoRs, keys, certificate chain checks, the caller's signature. Sans-IO.
//! - [`sdp`]: SDP (RFC 8866): where a stream wants media, and its rewrite toward the anchor. Pure.
//! - [`media`]: the media anchor: ICE between the two nodes of a call, signed key agreement, the encrypted tunnel. Sans-IO.
//! - [`enrollment`]: what the enrollment CA makes: certificates (`ca`), its answers to requests (`desk`), the signed overlay configuration document (`config_doc`, RFC 6940 §11.1 in spirit). Sans-IO.
//! - [`store`]: signed records, the checks a storing node makes, replica placement, the store trait. Sans-IO.
//! - [`proxy`]: the phone-facing registrar (digest auth, bindings) and stateful proxy (RFC 3261 §10, §16). Sans-IO.
//! - [`mailbox`]: offline messages: sealed to the recipient, stored at their AoR, delivered. Sans-IO.
//! - [`presence`]: our user's presence agent and our phones' buddies (RFC 3856, 3903). Sans-IO.
//! - [`peer`]: the node's protocol core; composes the rest, decides each request's answer. Sans-IO.
//! - [`daemon`]: tokio driver: sockets, timers, files, signals, DNS, mDNS, HTTP API and web page. All the I/O.
//! - [`sim`]: the deterministic many-node simulator: whole peers, real SIP bytes, a virtual network.
//! - [`cli`]: the `p2psip` command line (clap): `node`, `status`, `doctor`, `lookup`, `messages`, `web`, `service`, `sim`, `ca`, `enroll`, `account`, `demo`.
//!
//! # Sans-IO
//! Protocol logic never touches a socket, a file or the clock: state machines take `now` and
//! inputs as arguments and return what to send and when to wake. Only `daemon` does I/O.

pub mod addr;
pub mod cli;
// The one module allowed to read the clock (clippy.toml's sans-IO list).
#[allow(clippy::disallowed_methods)]
pub mod daemon;
pub mod discovery;
pub mod encoding;
pub mod enrollment;
pub mod histogram;
pub mod identity;
pub mod mailbox;
pub mod media;
pub mod nat;
pub mod netem;
pub mod outbound;
pub mod overlay;
pub mod peer;
pub mod presence;
pub mod proxy;
pub mod sdp;
pub mod sim;
pub mod sip;
pub mod store;
pub mod transport;
