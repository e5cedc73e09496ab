//! Tunables of the Chord core, with defaults chosen for laptops on home and office networks.
//!
//! Why these numbers (longer discussion in `docs/overlay-chord.md`):
//! - Laptops sleep, roam and close their lids without leaving; a neighbour that vanished must
//!   be noticed in seconds, not the minutes RELOAD's defaults allow (`chord-update-interval`
//!   600 s). `stabilize` every 5 s and a 2 s RPC deadline find a dead successor within about
//!   7 s; a dead predecessor is found as fast, and usually for free, because a live one asks us
//!   `GetNeighbours` every stabilize round (we only ping when it has gone quiet).
//! - But a ring where nothing happens should cost little (B5: under 200 B/s per node at
//!   one-hour sessions). Once a node's neighbourhood has been quiet for a minute, each quiet
//!   round doubles its period, up to 30 s; the first change or failure brings it back to 5 s.
//!   Under heavy churn a node sees a change every few seconds and never stretches, so the
//!   period follows the churn rate it observes.
//! - Fingers only shorten paths; stale ones cost hops, not correctness. They are checked every
//!   30 s, three per round, each by one request to the finger itself, so a table of
//!   `log2 N` distinct fingers is re-verified every few minutes at a few requests per minute.
//! - The RPC deadline is Chord's own failure detector: the SIP layer below retransmits over UDP
//!   (T1 = 500 ms, so two retransmissions fit in 2 s) but would wait 32 s (Timer F) before
//!   declaring failure.
//! - Every periodic timer is jittered by ±20% from the node's seeded generator so nodes started
//!   together (a test, a lab, a power cut) do not stabilize in lock-step.

use std::time::Duration;

use super::id::IdHash;

/// Configuration of one [`super::Chord`] node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChordConfig {
    /// `r`, the length of the successor list (Chord ToN §IV-E.3). The ring survives `r - 1`
    /// consecutive simultaneous failures.
    pub successor_list_len: usize,
    /// Period of `stabilize` (ask the successor for its predecessor and successor list) while
    /// the neighbourhood changes; the shortest period.
    pub stabilize_interval: Duration,
    /// The longest period of `stabilize`: each round that changes nothing doubles the period
    /// up to this; any change or failure resets it to `stabilize_interval` (adaptive
    /// stabilization). Equal to `stabilize_interval` for a fixed period.
    pub stabilize_max_interval: Duration,
    /// How long the neighbourhood must have been quiet (no change of successor list or
    /// predecessor, no node failing to answer) before the period starts to stretch: a node
    /// that sees changes more often than this, i.e. heavy churn, keeps the shortest period.
    pub stabilize_quiet_hold: Duration,
    /// Period of `check_predecessor`; the ping is skipped when the predecessor spoke to us
    /// within the last period.
    pub check_predecessor_interval: Duration,
    /// Period of a `fix_fingers` round.
    pub fix_fingers_interval: Duration,
    /// Distinct fingers checked per `fix_fingers` round.
    pub fingers_per_round: u32,
    /// How long the core waits for any answer before treating the node as failed.
    pub rpc_timeout: Duration,
    /// Most nodes one lookup (or join, or one stabilize round) may ask: SIP's Max-Forwards.
    pub max_hops: u32,
    /// How many closer nodes a redirect (`Response::Closer`) names, best first.
    pub redirect_width: usize,
    /// Wait before trying the bootstrap list again after every entry failed.
    pub join_retry_interval: Duration,
    /// Period of the own-place check: a lookup of our own ID that starts at a random far
    /// finger, so that rings which split after a mass failure or heavy churn (each one
    /// consistent by itself, so stabilize sees nothing wrong) find each other and merge.
    pub own_place_interval: Duration,
    /// A user lookup that finds nobody (hop limit, or no live node left to ask) is started
    /// again once, from scratch, after this wait. Right after a mass failure a key can lie in
    /// a run of more than `successor_list_len` dead nodes: no live node then names the first
    /// live node after the key until the node before the run has replaced its successor list
    /// (ToN §IV-E.3), which stabilize does within seconds. `Duration::ZERO` disables the retry.
    pub lookup_retry_delay: Duration,
    /// Each periodic timer fires at its interval ± this many percent (capped at 100).
    pub jitter_percent: u32,
    /// The ID hash of the overlay; used to check claims, never to derive our own ID.
    pub id_hash: IdHash,
    /// Refuse (`IdMismatch`) any request whose sender's ID is not the one its address
    /// derives ([`super::NodeId::verify_claim`]). Only meaningful when the driver passes the
    /// address the request was observed to come from as `from.addr`; off by default because
    /// the caller, which saw the packet, normally checks, and decides what to do about NATs.
    pub verify_claims: bool,
    /// Seeds the node's ChaCha8 generator (jitter only; nothing secret comes from it).
    pub seed: u64,
}

impl Default for ChordConfig {
    fn default() -> ChordConfig {
        ChordConfig {
            successor_list_len: 8,
            stabilize_interval: Duration::from_secs(5),
            // Adaptive: a neighbourhood quiet for a minute stabilizes every 10, 20, then 30 s
            // (B5: under 200 B/s per node at one-hour sessions); under heavy churn changes come
            // every few seconds and the period stays at 5 s (docs/performance.md, "B5").
            stabilize_max_interval: Duration::from_secs(30),
            stabilize_quiet_hold: Duration::from_secs(60),
            check_predecessor_interval: Duration::from_secs(5),
            fix_fingers_interval: Duration::from_secs(30),
            fingers_per_round: 3,
            rpc_timeout: Duration::from_secs(2),
            max_hops: 32,
            redirect_width: 3,
            join_retry_interval: Duration::from_secs(10),
            // Every node checks, so a split is found within about this period divided by the
            // number of nodes whose route crosses into the other cycle; the cost is one lookup
            // per node per period, measured at 12.8 B/s per node with a 10-minute period at
            // N = 1,000 (docs/performance.md, "B2"), so about 4 B/s at 30 minutes.
            own_place_interval: Duration::from_secs(1800),
            // Two base stabilize periods: a failed lookup has already spent at least
            // `successor_list_len` RPC deadlines on dead backups by then (docs/performance.md,
            // "B2").
            lookup_retry_delay: Duration::from_secs(10),
            jitter_percent: 20,
            id_hash: IdHash::Sha1,
            verify_claims: false,
            seed: 0,
        }
    }
}

impl ChordConfig {
    /// How long the predecessor may stay silent before `check_predecessor` pings it: it
    /// proves itself alive by stabilizing with us at least once per longest stabilize period
    /// (plus jitter and one RPC deadline).
    pub fn predecessor_silence(&self) -> Duration {
        let longest = self.stabilize_max_interval.max(self.stabilize_interval);
        let jitter = longest / 100 * self.jitter_percent.min(100);
        (longest + jitter + self.rpc_timeout).max(self.check_predecessor_interval)
    }

    /// How long a node that failed to answer is ignored when others still name it (in their
    /// successor lists, as their predecessor): long enough for its neighbours to notice the
    /// failure themselves (one check of the predecessor plus one stabilize round).
    pub fn failed_memory(&self) -> Duration {
        self.check_predecessor_interval + self.stabilize_interval + self.rpc_timeout
    }
}
