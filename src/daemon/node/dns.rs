//! DNS for calls to other SIP domains: runs `crate::outbound::Resolution` (RFC 3263) against
//! name servers through hickory-resolver, one task per request, and hands the targets back to
//! the event loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use tokio::sync::mpsc;
use tracing::debug;

use crate::outbound::{Answer, Naptr, Query, Resolution, ResolveError, Srv, Target};
use crate::proxy::outbound::ResolveRequest;
use crate::sip::transaction::ServerTxId;

/// How long one request's whole resolution may take (every query of it).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(8);

/// What a resolution task reports.
pub(crate) type Resolved = (ServerTxId, Result<Vec<Target>, ResolveError>);

/// A resolver asking `servers` (UDP, then TCP for truncated answers), or the system's name
/// servers when there are none.
pub(crate) fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let builder = if servers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| format!("cannot read the system's DNS settings: {e}"))?
    } else {
        let mut config = ResolverConfig::from_parts(None, Vec::new(), Vec::new());
        for s in servers {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = s.port();
                    c
                })
                .collect();
            config.add_name_server(NameServerConfig::new(s.ip(), true, connections));
        }
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
    };
    builder.build().map_err(|e| format!("cannot start the DNS resolver: {e}"))
}

/// Resolves `request` and sends the outcome to `done`.
pub(crate) async fn resolve(
    resolver: Arc<TokioResolver>,
    request: ResolveRequest,
    seed: u64,
    done: mpsc::Sender<Resolved>,
) {
    let mut resolution = Resolution::new(&request.uri, seed);
    let run = async {
        while let Some(query) = resolution.next_query() {
            let answer = ask(&resolver, &query).await;
            debug!(?query, ?answer, "DNS");
            resolution.answer(&query, answer);
        }
    };
    // A resolution cut short by the deadline reports what it found by then.
    let _ = tokio::time::timeout(RESOLVE_TIMEOUT, run).await;
    let _ = done.send((request.sid, resolution.result())).await;
}

/// One query; a failure (no such name, no answer) finds nothing.
async fn ask(resolver: &TokioResolver, query: &Query) -> Answer {
    match query {
        Query::Naptr(name) => Answer::Naptr(
            records(resolver, name, RecordType::NAPTR, |data| match data {
                RData::NAPTR(n) => Some(Naptr {
                    order: n.order,
                    preference: n.preference,
                    flags: String::from_utf8_lossy(&n.flags).into_owned(),
                    services: String::from_utf8_lossy(&n.services).into_owned(),
                    replacement: n.replacement.to_ascii(),
                }),
                _ => None,
            })
            .await,
        ),
        Query::Srv(name) => Answer::Srv(
            records(resolver, name, RecordType::SRV, |data| match data {
                RData::SRV(s) => {
                    Some(Srv { priority: s.priority, weight: s.weight, port: s.port, target: s.target.to_ascii() })
                }
                _ => None,
            })
            .await,
        ),
        Query::Address(name) => match resolver.lookup_ip(fqdn(name)).await {
            Ok(ips) => Answer::Address(ips.iter().collect()),
            Err(_) => Answer::Address(Vec::new()),
        },
    }
}

/// The records of `kind` for `name` that `read` makes sense of; none when the query fails.
async fn records<T>(
    resolver: &TokioResolver,
    name: &str,
    kind: RecordType,
    read: impl Fn(&RData) -> Option<T>,
) -> Vec<T> {
    match resolver.lookup(fqdn(name), kind).await {
        Ok(found) => found.answers().iter().filter_map(|r| read(&r.data)).collect(),
        Err(_) => Vec::new(),
    }
}

/// `name` as a fully qualified name: asked as is, never with a search domain appended.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}
