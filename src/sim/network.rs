//! The virtual network: datagrams in flight on a virtual clock, each delayed and lost as the
//! link model says ([`crate::netem`]), all drawn from one seeded ChaCha8.
//!
//! It carries opaque bytes between socket addresses and knows nothing of SIP or of the nodes;
//! like str0m's `netem`, it is itself sans-IO: `send(now, …)` queues, `poll_at` says when the
//! next datagram lands, `poll_delivery(now)` hands it over. No reordering guarantees (jitter
//! reorders, as UDP may), no duplication, no partitions, no bandwidth limit.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::netem::LinkConfig;

/// What the network has carried since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Datagrams handed to the network, lost ones included.
    pub sent: u64,
    /// Their payload bytes.
    pub bytes_sent: u64,
    /// Datagrams lost.
    pub lost: u64,
    /// Datagrams delivered.
    pub delivered: u64,
}

/// A datagram that has arrived.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The sender.
    pub from: SocketAddr,
    /// The receiver.
    pub to: SocketAddr,
    /// As the sender asked: a "TCP" message arrives as a stream frame would (the model has
    /// no handshake or ordering beyond its delays; it only lets the receiver tell them apart).
    pub transport: crate::peer::Transport,
    /// The datagram.
    pub data: Bytes,
}

struct InFlight {
    at: Instant,
    /// Send order breaks ties, so equal arrival times replay in one order.
    seq: u64,
    delivery: Delivery,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &InFlight) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &InFlight) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    // Reversed: BinaryHeap is a max-heap and the earliest arrival comes first.
    fn cmp(&self, other: &InFlight) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Datagrams in flight.
pub struct Network {
    config: LinkConfig,
    rng: ChaCha8Rng,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    stats: NetworkStats,
}

impl Network {
    /// An empty network on `config`, drawing from `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Network {
        Network {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            stats: NetworkStats::default(),
        }
    }

    /// Its link model.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// What it has carried.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// Datagrams still in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Queues a datagram, or loses it.
    pub fn send(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        transport: crate::peer::Transport,
        data: Bytes,
    ) {
        self.stats.sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        if self.config.lost(&mut self.rng) {
            self.stats.lost += 1;
            return;
        }
        let delay = self.config.delay(&mut self.rng);
        self.seq += 1;
        self.queue.push(InFlight { at: now + delay, seq: self.seq, delivery: Delivery { from, to, transport, data } });
    }

    /// When the next datagram lands.
    pub fn poll_at(&self) -> Option<Instant> {
        self.queue.peek().map(|f| f.at)
    }

    /// The next datagram due at or before `now`.
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Delivery> {
        if self.queue.peek()?.at > now {
            return None;
        }
        self.stats.delivered += 1;
        self.queue.pop().map(|f| f.delivery)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch

    use std::time::Duration;

    use super::*;

    #[test]
    fn delays_stay_within_jitter_and_loss_is_about_right() {
        let now = Instant::now();
        let config = LinkConfig { loss_percent: 10.0, ..LinkConfig::default() };
        let mut net = Network::new(config, 7);
        let a: SocketAddr = "10.0.0.1:5070".parse().unwrap();
        for _ in 0..10_000 {
            net.send(now, a, a, crate::peer::Transport::Udp, Bytes::from_static(b"x"));
        }
        let lost = net.stats().lost;
        assert!((800..1200).contains(&lost), "{lost} of 10,000 lost at 10%");
        let far = now + Duration::from_secs(1);
        let mut last = now;
        while let Some(at) = net.poll_at() {
            assert!(at >= now + Duration::from_millis(10) && at <= now + Duration::from_millis(50));
            assert!(at >= last, "delivered in arrival order");
            last = at;
            net.poll_delivery(far).unwrap();
        }
        assert_eq!(net.stats().delivered + lost, 10_000);
    }
}
