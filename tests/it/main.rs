//! Every integration test in one binary (hickory's `tests/integration/main.rs`): one link of
//! the crate with its dependencies instead of one per file. Each module is one area; tests
//! that start real processes use the loopback addresses their module names, so they can run
//! in parallel.
//!
//! - [`rfc4475`], [`rfc4475_table`], [`live_rfc4475`]: RFC 4475's torture messages, against
//!   the sans-IO peer and against a running node.
//! - [`framing_agreement`], [`fuzz_corpus`]: the stream framer agrees with the parser; the
//!   committed fuzz corpus replays through the fuzz target bodies.
//! - [`module_cycles`]: no import cycle between the crate's top-level modules.
//! - [`cli`], [`demo`], [`enrollment`]: the command line, `p2psip demo`, the CA and `enroll`.
//! - [`ring`], [`storage`]: real daemons forming rings, storing and reading signed records.
//! - [`sipp_options`], [`proxy_sipp`], [`proxy_baresip`], [`proxy_overlay`]: sipp and baresip
//!   against the proxy, alone and across the overlay.
//! - [`robustness`]: floods and limits that must not take a node down.
//! - [`stun`]: the overlay port answering a real STUN client.
//! - [`nat`]: nodes in network namespaces behind nftables NATs: peers, clients, port forwards.
//! - [`media`]: calls between real phones through real NATs, their media anchored by the nodes.
//! - [`lan`]: nodes on one bridge in network namespaces finding each other by mDNS.
//! - [`outbound`]: calls and messages to an ordinary SIP domain through DNS (dnsmasq) and Kamailio.
//! - [`tutorial`]: `docs/tutorial.md` run as written: a server and two laptops behind NATs.
//! - [`web`]: the web page in headless Chromium, `/metrics`, the token that stops a node.
//! - [`common`]: the shared harness (processes by PID, free ports, the node, the CA, phones).

mod cli;
mod common;
mod demo;
mod enrollment;
mod framing_agreement;
mod fuzz_corpus;
mod lan;
mod live_rfc4475;
mod mailbox;
mod media;
mod module_cycles;
mod nat;
mod outbound;
mod presence;
mod proxy_baresip;
mod proxy_overlay;
mod proxy_sipp;
mod rfc4475;
mod rfc4475_table;
mod ring;
mod robustness;
mod sipp_options;
mod storage;
mod stun;
mod tutorial;
mod web;
