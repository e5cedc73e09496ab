//! The one link model of every simulated network (str0m's `netem` in spirit): each datagram
//! is delayed by a latency ± uniform jitter and lost with a fixed probability, drawn from the
//! caller's seeded generator. The simulator's datagram network (`sim::network`) and the
//! abstract-RPC test network (`overlay::testnet`) both draw from it, so a setting means the
//! same thing in both. NAT mapping and filtering types for ICE scenarios will join it here.

use std::time::Duration;

use rand::Rng;

/// How a simulated link treats every datagram.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// One-way delay around which each datagram's delay is drawn.
    pub latency: Duration,
    /// Each delay is `latency ± jitter`, uniformly (never below zero).
    pub jitter: Duration,
    /// Each datagram is lost with this probability, in percent.
    pub loss_percent: f64,
}

impl Default for LinkConfig {
    /// 30 ms ± 20 ms (the overlay test bench's 10–50 ms), no loss.
    fn default() -> LinkConfig {
        LinkConfig { latency: Duration::from_millis(30), jitter: Duration::from_millis(20), loss_percent: 0.0 }
    }
}

impl LinkConfig {
    /// Delays uniform in `[min, max]` (as `latency ± jitter`), no loss.
    pub fn between(min: Duration, max: Duration) -> LinkConfig {
        let max = max.max(min);
        LinkConfig { latency: (min + max) / 2, jitter: (max - min) / 2, loss_percent: 0.0 }
    }

    /// Whether the next datagram is lost (draws only when loss is on).
    pub fn lost(&self, rng: &mut impl Rng) -> bool {
        self.loss_percent > 0.0 && rng.random::<f64>() * 100.0 < self.loss_percent
    }

    /// The next datagram's delay (draws only when there is jitter).
    pub fn delay(&self, rng: &mut impl Rng) -> Duration {
        let jitter = self.jitter.as_micros() as i64;
        let offset = if jitter > 0 { rng.random_range(-jitter..=jitter) } else { 0 };
        let micros = (self.latency.as_micros() as i64 + offset).max(0);
        Duration::from_micros(micros as u64)
    }
}
