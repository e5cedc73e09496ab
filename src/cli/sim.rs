//! `p2psip sim`: its flags, and the human-readable summary of a [`SimReport`].

use std::fmt::Write;
use std::time::Duration;

use clap::Args;

use crate::netem::LinkConfig;
use crate::overlay::ChordConfig;
use crate::sim::scenario::{LookupStats, SimParams, SimReport};

/// Simulate a ring of p2psip nodes on a virtual network and report how the overlay behaves.
///
/// Every node is a whole p2psip peer exchanging real SIP messages over a simulated network
/// with a virtual clock, so an hour of ring life takes seconds and a run replays exactly from
/// its seed. The run: nodes join one every 50 ms through random earlier nodes; the simulator
/// waits until every successor, predecessor and successor list is correct (the convergence
/// time), then until every finger is; measures maintenance traffic over a quiet minute;
/// performs --lookups lookups for random keys from random nodes; then, if asked, kills a
/// fraction of the nodes at once (--fail) and runs continuous churn (--churn).
///
/// A lookup succeeds when it returns the key's true successor among the nodes in the ring at
/// the instant it finishes. Exits 1, printing the seed, if the ring never becomes correct.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct SimArgs {
    /// Number of nodes in the ring
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub nodes: u64,

    /// Seed for every random choice (addresses, latency, loss, victims, keys); same seed, same run
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,

    /// Lookups per measurement: on the converged ring, after --fail, and during --churn
    #[arg(long, value_name = "L", default_value_t = 1000)]
    pub lookups: usize,

    /// After convergence, kill this fraction of the nodes at once (0.2 = 20%), silently; then
    /// measure lookups at that instant and again once the ring has healed
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    pub fail: Option<f64>,

    /// Continuous churn, in events per minute for --churn-minutes: each event one random node
    /// vanishes without leaving and a fresh node joins. A population of N with median session
    /// S minutes takes N·ln2/S events per minute
    #[arg(long, value_name = "EVENTS_PER_MIN", default_value_t = 0.0)]
    pub churn: f64,

    /// How long --churn lasts, in virtual minutes
    #[arg(long, value_name = "MIN", default_value_t = 10.0)]
    pub churn_minutes: f64,

    /// One-way network latency in milliseconds; each datagram's delay is this ± --jitter
    #[arg(long, value_name = "MS", default_value_t = 30.0)]
    pub latency: f64,

    /// Uniform jitter around --latency, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 20.0)]
    pub jitter: f64,

    /// Probability that any datagram is lost, in percent
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    pub loss: f64,

    /// Every node's stabilize period (and check-predecessor period), in seconds
    /// [default: ChordConfig's, 5]
    #[arg(long, value_name = "SECS")]
    pub stabilize_interval: Option<f64>,

    /// Every node's longest stabilize period, in seconds: quiet rounds double the period from
    /// --stabilize-interval up to this (adaptive stabilization; equal to --stabilize-interval
    /// for a fixed period) [default: ChordConfig's, 30]
    #[arg(long, value_name = "SECS")]
    pub stabilize_max_interval: Option<f64>,

    /// How long a node's neighbourhood must be quiet before its stabilize period stretches,
    /// in seconds [default: ChordConfig's, 60]
    #[arg(long, value_name = "SECS")]
    pub stabilize_quiet_hold: Option<f64>,

    /// Every node's fix_fingers period, in seconds [default: ChordConfig's, 30]
    #[arg(long, value_name = "SECS")]
    pub fix_fingers_interval: Option<f64>,

    /// Signed records: after the lookups, store M registrations (each of its own enrolled
    /// owner, signed once up front) at their R+1 places through the real SIP store path, and
    /// check that no two nodes sharing an address hold copies of one record (exits 1 if any
    /// do); with --fail, read every record back afterwards and report the share still readable
    #[arg(long, value_name = "M", default_value_t = 0)]
    pub records: usize,

    /// R for --records: each record lives at H(K), H(K‖1) … H(K‖R)
    #[arg(long, value_name = "R", default_value_t = crate::peer::DEFAULT_REPLICAS,
          value_parser = clap::value_parser!(u8).range(0..=16))]
    pub replicas: u8,

    /// Put every N consecutive nodes on one address (consecutive ports, so contiguous IDs: a
    /// Sybil group) instead of every tenth node sharing the previous node's address
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub same_address: usize,

    /// Print the report as JSON (stable snake_case field names) instead of a summary
    #[arg(long)]
    pub json: bool,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{s}` is not a fraction between 0 and 1")),
    }
}

impl SimArgs {
    pub fn params(&self) -> SimParams {
        let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1e3);
        let mut chord = ChordConfig::default();
        if let Some(s) = self.stabilize_interval {
            chord.stabilize_interval = Duration::from_secs_f64(s.max(0.1));
            chord.check_predecessor_interval = chord.stabilize_interval;
        }
        if let Some(s) = self.stabilize_quiet_hold {
            chord.stabilize_quiet_hold = Duration::from_secs_f64(s.max(0.0));
        }
        if let Some(s) = self.stabilize_max_interval {
            chord.stabilize_max_interval = Duration::from_secs_f64(s.max(0.1));
        }
        if let Some(s) = self.fix_fingers_interval {
            chord.fix_fingers_interval = Duration::from_secs_f64(s.max(0.1));
        }
        SimParams {
            chord,
            lookups: self.lookups,
            fail: self.fail,
            churn_per_min: self.churn.max(0.0),
            churn_duration: Duration::from_secs_f64(self.churn_minutes.max(0.0) * 60.0),
            network: LinkConfig {
                latency: ms(self.latency),
                jitter: ms(self.jitter),
                loss_percent: self.loss.clamp(0.0, 100.0),
            },
            replicas: self.replicas,
            same_address: self.same_address,
            ..SimParams::new(self.nodes as usize, self.seed)
        }
    }
}

fn lookups_line(s: &LookupStats) -> String {
    format!(
        "{:.2}% of {} right ({} failed, {} wrong of which {} named a departed node); hops mean {:.2}, p50 {}, p99 {}, max {}; \
         plus {:.2} confirmations (total mean {:.2}, p99 {})",
        s.success * 100.0,
        s.lookups,
        s.failed,
        s.wrong,
        s.wrong_departed,
        s.mean_hops,
        s.p50_hops,
        s.p99_hops,
        s.max_hops,
        s.mean_confirmations,
        s.mean_total_hops,
        s.p99_total_hops
    )
}

fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "not within 10 min".into())
}

/// A few aligned lines.
pub fn summary(r: &SimReport) -> String {
    let mut out = String::new();
    let mut row = |name: &str, value: String| {
        let _ = writeln!(out, "{name:<22}{value}");
    };
    row(
        "nodes",
        format!(
            "{} (seed {}), latency {} ± {} ms, loss {}%",
            r.nodes, r.seed, r.latency_ms, r.jitter_ms, r.loss_percent
        ),
    );
    row("converged", format!("{:.0} s after the last join (virtual)", r.convergence_time_s));
    row("fingers all correct", secs(r.fingers_converged_s));
    row(
        "entries correct",
        format!(
            "successor lists {:.4}, fingers {:.4} (far fingers {:.4})",
            r.successor_entries_correct, r.fingers_correct, r.far_fingers_correct
        ),
    );
    row(
        "maintenance",
        format!(
            "{:.0} B/s and {:.2} messages/s per node",
            r.maintenance.bytes_per_node_per_s, r.maintenance.messages_per_node_per_s
        ),
    );
    row("lookups", lookups_line(&r.lookups));
    row("hop bounds", format!("½·log2 N = {:.2}, log2 N = {:.2}", r.half_log2_n, r.log2_n));
    if let Some(f) = &r.fail {
        row("fail at once", format!("{} nodes ({:.0}%)", f.killed, f.fraction * 100.0));
        row("  at that instant", lookups_line(&f.immediate));
        row("  retried", lookups_line(&f.retried));
        row("  right after a retry", format!("{:.2}%", f.success_after_retry * 100.0));
        row("  ring healed", secs(f.heal_time_s));
        row("  after healing", lookups_line(&f.settled));
    }
    if let Some(c) = &r.churn {
        row(
            "churn",
            format!(
                "{} events/min for {:.0} s ({} joins, {} departures; median session {:.0} s)",
                c.events_per_min, c.duration_s, c.joins, c.departures, c.median_session_s
            ),
        );
        row("  lookups", lookups_line(&c.lookups));
        row(
            "  traffic",
            format!(
                "{:.0} B/s and {:.2} messages/s per node",
                c.traffic.bytes_per_node_per_s, c.traffic.messages_per_node_per_s
            ),
        );
        row("  ring correct after", secs(c.converged_after_s));
    }
    if let Some(rec) = &r.records {
        row(
            "records",
            format!(
                "{} with R = {} ({} of {} places stored, {} records on R+1 distinct nodes)",
                rec.records, rec.replicas, rec.places_stored, rec.places, rec.records_fully_placed
            ),
        );
        row(
            "  same address",
            format!(
                "{} records with two copies on one address (largest group {} nodes; {} places moved to \
                 spare numbers; without the moves {} records would have had two places on one address)",
                rec.same_address_violations,
                rec.largest_address_group,
                rec.places_moved,
                rec.same_address_without_moves
            ),
        );
        if let Some(s) = r.signing_s {
            row("  signed up front", format!("{s:.2} s"));
        }
        if let Some(a) = &rec.after_fail {
            row(
                "  after the failure",
                format!(
                    "{:.2}% readable ({} of {}; {} had a live copy)",
                    a.readable_share * 100.0,
                    a.readable,
                    rec.records,
                    a.with_a_live_copy
                ),
            );
        }
    }
    row("virtual time", format!("{:.0} s, {} datagrams", r.virtual_time_s, r.datagrams));
    let rss = r.peak_rss_kib.map(|k| format!(", peak RSS {:.0} MiB", k as f64 / 1024.0)).unwrap_or_default();
    row("wall time", format!("{:.1} s{rss}", r.wall_time_s));
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(line: &str) -> SimArgs {
        match Cli::try_parse_from(line.split_whitespace()).unwrap().command {
            Command::Sim(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_become_params() {
        let a = args(
            "p2psip sim --nodes 50 --seed 7 --fail 0.2 --churn 12 --latency 40 --loss 1.5 --stabilize-interval 10",
        );
        let p = a.params();
        assert_eq!((p.nodes, p.seed, p.fail, p.churn_per_min), (50, 7, Some(0.2), 12.0));
        assert_eq!(p.network.latency, Duration::from_millis(40));
        assert_eq!(p.network.loss_percent, 1.5);
        assert_eq!(p.chord.stabilize_interval, Duration::from_secs(10));
        assert_eq!(p.chord.check_predecessor_interval, Duration::from_secs(10));
        assert_eq!(p.chord.fix_fingers_interval, ChordConfig::default().fix_fingers_interval);
        assert!(Cli::try_parse_from(["p2psip", "sim", "--fail", "1.5"]).is_err());
    }

    #[test]
    fn summary_names_every_measure() {
        let r = SimReport {
            nodes: 10,
            fail: Some(Default::default()),
            churn: Some(Default::default()),
            ..Default::default()
        };
        let s = summary(&r);
        for word in ["converged", "maintenance", "lookups", "fail at once", "after healing", "churn", "wall time"] {
            assert!(s.contains(word), "{word} missing from\n{s}");
        }
    }
}
