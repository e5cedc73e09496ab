//! The node on its local network (mDNS/DNS-SD through mdns-sd): announces
//! `_p2psip._udp.local.` with the TXT record `crate::discovery::txt` makes, only on the
//! interface of its overlay address, and passes what it hears of other nodes to the event
//! loop, which decides with `crate::discovery::LanJoin`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::discovery::{self, Heard};
use crate::overlay::{IdHash, NodeId};

/// Something heard on the LAN.
#[derive(Debug)]
pub(crate) enum LanEvent {
    /// A node of our overlay announced itself (or changed its announcement).
    Heard(Heard),
    /// A node's announcement went (it said goodbye, or expired).
    Gone(NodeId),
}

/// This node's announcement, and what it hears.
pub(crate) struct Lan {
    daemon: ServiceDaemon,
    overlay: String,
    id: NodeId,
    addr: SocketAddr,
    fullname: String,
    on_ring: bool,
    pub(crate) events: mpsc::Receiver<LanEvent>,
}

impl Lan {
    /// Announces the node at `addr` (its overlay address) and starts listening for others of
    /// `overlay`; `on_ring` says whether it is on a ring already.
    pub(crate) fn start(
        overlay: &str,
        id: NodeId,
        id_hash: IdHash,
        addr: SocketAddr,
        on_ring: bool,
    ) -> Result<Lan, String> {
        let daemon = ServiceDaemon::new().map_err(|e| format!("mDNS: {e}"))?;
        if !addr.ip().is_unspecified() {
            // Only the network of the overlay address: another interface's LAN could not
            // reach that address anyway.
            let _ = daemon.disable_interface(IfKind::All);
            daemon.enable_interface(IfKind::Addr(addr.ip())).map_err(|e| format!("mDNS: {e}"))?;
        }
        let receiver = daemon.browse(discovery::SERVICE_TYPE).map_err(|e| format!("mDNS browse: {e}"))?;
        let (tx, events) = mpsc::channel(64);
        let ours = overlay.to_owned();
        tokio::spawn(async move {
            let mut names: BTreeMap<String, NodeId> = BTreeMap::new();
            while let Ok(event) = receiver.recv_async().await {
                let lan = match event {
                    ServiceEvent::ServiceResolved(s) => {
                        let property = |k: &str| s.get_property_val_str(k).map(str::to_owned);
                        let addrs = s.addresses.iter().map(|a| a.to_ip_addr());
                        match Heard::from_announcement(&ours, id_hash, addrs, s.port, property) {
                            Some(h) => {
                                names.insert(s.fullname.clone(), h.id);
                                LanEvent::Heard(h)
                            }
                            None => {
                                debug!(name = %s.fullname, "mDNS: not a node of our overlay, or an ID its address does not derive");
                                continue;
                            }
                        }
                    }
                    ServiceEvent::ServiceRemoved(_, name) => match names.remove(&name) {
                        Some(id) => LanEvent::Gone(id),
                        None => continue,
                    },
                    _ => continue,
                };
                if tx.send(lan).await.is_err() {
                    break;
                }
            }
        });
        let fullname = format!("{}.{}", instance_name(id, addr), discovery::SERVICE_TYPE);
        let mut lan = Lan { daemon, overlay: overlay.to_owned(), id, addr, fullname, on_ring, events };
        lan.announce(on_ring)?;
        Ok(lan)
    }

    /// (Re-)registers the announcement with `ring` as given.
    fn announce(&mut self, on_ring: bool) -> Result<(), String> {
        let instance = instance_name(self.id, self.addr);
        let host = format!("{instance}.local.");
        let txt = discovery::txt(&self.overlay, self.id, on_ring);
        let ip = if self.addr.ip().is_unspecified() { String::new() } else { self.addr.ip().to_string() };
        let mut info =
            ServiceInfo::new(discovery::SERVICE_TYPE, &instance, &host, ip.as_str(), self.addr.port(), &txt[..])
                .map_err(|e| format!("mDNS announcement: {e}"))?;
        if self.addr.ip().is_unspecified() {
            info = info.enable_addr_auto();
        }
        self.daemon.register(info).map_err(|e| format!("mDNS register: {e}"))?;
        self.on_ring = on_ring;
        Ok(())
    }

    /// The node is on a ring now: its announcement says so (others join it without waiting).
    pub(crate) fn set_on_ring(&mut self) {
        if !self.on_ring {
            if let Err(e) = self.announce(true) {
                warn!(error = %e, "could not update the mDNS announcement");
            }
        }
    }

    /// Whether the announcement says the node is on a ring.
    pub(crate) fn on_ring(&self) -> bool {
        self.on_ring
    }

    /// Says goodbye on the LAN and stops the mDNS thread.
    pub(crate) fn stop(self) {
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(std::time::Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// The DNS-SD instance (and host) name of the node: its Node ID's first 12 hex digits and its
/// port, unique on any LAN.
fn instance_name(id: NodeId, addr: SocketAddr) -> String {
    let hex = id.to_string();
    format!("p2psip-{}-{}", &hex[..12], addr.port())
}
