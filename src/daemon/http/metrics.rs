//! `GET /metrics`: the status in Prometheus' text format (OpenMetrics 1.0, through
//! prometheus-client), every name prefixed `p2psip_`.
//!
//! The numbers are the ones `/status` shows, taken from the same snapshot: each numeric field
//! of its sections becomes one metric named after its path (`counters.bytes_in` →
//! `p2psip_bytes_in_total`, `overlay.counters.rpcs_sent` → `p2psip_overlay_rpcs_sent_total`).
//! Fields that count since start are counters; those that say how many there are now (bindings,
//! transactions, records held, the loop's load) are gauges (`GAUGES`). A field added to
//! `/status` shows here without a change. The user lookups' hops and time are histograms.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;

use super::status::Status;
use crate::histogram::Histogram;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The sections of the status whose numeric fields are exported, with the prefix their
/// metrics get (after `p2psip_`).
const SECTIONS: &[(&str, &str)] = &[
    ("counters", ""),
    ("transactions", "transactions_"),
    ("load", "load_"),
    ("registrar", "proxy_"),
    ("overlay.counters", "overlay_"),
    ("storage", "storage_"),
    ("mailbox", "mailbox_"),
    ("presence", "presence_"),
    ("tcp", "tcp_"),
];

/// Fields that say how many there are now, not how many there have been: gauges. By their
/// metric name (prefix included), as a name is unique where a field name is not.
const GAUGES: &[&str] = &[
    "transactions_server",
    "transactions_client",
    "load_busy_percent",
    "load_queued_percent",
    "load_shed_percent",
    "proxy_accounts",
    "proxy_bindings",
    "proxy_forwarding",
    "proxy_clients",
    "storage_records_held",
    "storage_reputs_queued",
    "mailbox_held_for_others",
    "mailbox_waiting_for_me",
    "presence_subscriptions",
    "presence_watchers",
    "presence_pending",
    "presence_phone_subscriptions",
    "presence_publications",
    "presence_cached",
    "tcp_open",
];

/// The status as OpenMetrics text.
pub fn render(status: &Status) -> String {
    let mut registry = Registry::with_prefix("p2psip");
    let json = serde_json::to_value(status).unwrap_or(Value::Null);
    registry.register(
        "node",
        "This node: its version, Node ID, overlay, role and state in the ring",
        Info::new(vec![
            ("version", status.version.to_owned()),
            ("node_id", status.node_id.clone()),
            ("overlay", status.overlay.name.clone()),
            ("role", status.role.to_owned()),
            ("state", status.overlay.state.to_owned()),
        ]),
    );
    registry.register_with_unit(
        "uptime",
        "Time since the node started",
        Unit::Seconds,
        ConstGauge::new(status.uptime_secs as i64),
    );
    let now = [
        ("phones", "Phones registered with the proxy listener now", status.phones.len()),
        ("calls", "Calls whose media this node anchors now", status.calls.len()),
        ("successors", "Nodes in the successor list", status.successors.len()),
        ("fingers", "Distinct nodes the finger table names", status.fingers.len()),
        ("tcp_connections", "TCP connections open or opening, both listeners", status.tcp_connections),
        ("clients", "Users clients have bound at this node, their edge", status.clients),
        ("media_sockets", "Media anchor sockets open", status.media_sockets.unwrap_or(0)),
        ("media_relays", "TURN allocations the media anchor holds", status.media_relays.unwrap_or(0)),
        ("presence_buddies", "Buddies our phones watch", status.presence.as_ref().map_or(0, |p| p.buddies.len())),
        ("predecessor_known", "1 when the ring predecessor is known", usize::from(status.predecessor.is_some())),
    ];
    for (name, help, value) in now {
        registry.register(name, help, ConstGauge::new(value as i64));
    }
    for (path, prefix) in SECTIONS {
        let section = path.split('.').try_fold(&json, |v, key| v.get(key));
        if let Some(Value::Object(fields)) = section {
            for (field, value) in fields {
                register_number(&mut registry, &format!("{prefix}{field}"), path, field, value);
            }
        }
    }
    let lookups = &status.overlay.lookups;
    registry.register(
        "lookup_hops",
        "Nodes asked by user lookups that found their node, confirmations included",
        HistogramSnapshot(lookups.hops.clone()),
    );
    registry.register_with_unit(
        "lookup_duration",
        "Time of user lookups that found their node, retries included",
        Unit::Seconds,
        HistogramSnapshot(lookups.seconds.clone()),
    );
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// One numeric status field as a counter or a gauge; nested objects (a section's own
/// sub-counters) are walked with their field names joined by `_`.
fn register_number(registry: &mut Registry, name: &str, path: &str, field: &str, value: &Value) {
    match value {
        Value::Number(n) => {
            let help = format!("`{path}.{field}` in /status");
            if GAUGES.contains(&name) {
                registry.register(name, help, ConstGauge::new(n.as_f64().unwrap_or(0.0)));
            } else {
                registry.register(name, help, ConstCounter::new(n.as_u64().unwrap_or(0)));
            }
        }
        Value::Object(fields) => {
            for (inner, value) in fields {
                register_number(registry, &format!("{name}_{inner}"), path, &format!("{field}.{inner}"), value);
            }
        }
        _ => {}
    }
}

/// A [`Histogram`] as prometheus-client encodes one (cumulative buckets, sum, count).
#[derive(Debug)]
struct HistogramSnapshot(Histogram);

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.0.sum, self.0.count, &self.0.buckets(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
