//! Requests to a buddy sent on the contacts our buddy cache holds (`crate::presence::buddies`)
//! instead of a registration lookup (SOSIMPLE §6). If the buddy's node does not take it (no
//! answer at all within [`CACHE_WAIT`], or 403/404/408/480/500/503 before anything rang), the
//! request is parked again and looked up as any other, and the phone sees only the outcome of
//! that: it never notices the cache.

use std::time::{Duration, Instant};

use super::{Context, Proxy};
use crate::sip::transaction::{ServerTxId, TransactionLayer};
use crate::transport::Endpoint;

/// How long a buddy's node named by the cache has to answer anything (its 100 Trying comes in
/// one round trip) before the request is looked up after all.
pub(super) const CACHE_WAIT: Duration = Duration::from_secs(2);

impl Proxy {
    /// A parked request to `aor`, resolved from the buddy cache to `contacts`.
    pub fn overlay_resolved_cached(
        &mut self,
        now: Instant,
        tl: &mut TransactionLayer<Endpoint>,
        id: ServerTxId,
        aor: &str,
        contacts: Vec<String>,
    ) {
        if let Some(ctx) = self.contexts.get_mut(&id) {
            ctx.cached = Some((aor.to_owned(), now + CACHE_WAIT));
        }
        self.overlay_resolved(now, tl, id, Some(contacts));
        let unsent =
            self.contexts.get(&id).is_some_and(|c| c.cached.is_some() && c.branches.is_empty() && !c.final_sent);
        if unsent {
            // None of the cached contacts was a usable next hop.
            if let Some(mut ctx) = self.contexts.remove(&id) {
                self.fall_back(id, &mut ctx);
                self.contexts.insert(id, ctx);
            }
        }
    }

    /// Whether a request sent on the cache, whose branches have all ended with `best`, goes
    /// to a lookup instead of to the phone; if so it is parked again.
    pub(super) fn cache_fallback(&mut self, sid: ServerTxId, ctx: &mut Context, best: Option<u16>) -> bool {
        if ctx.cached.is_none() || ctx.branches.iter().any(|b| b.rang) {
            return false;
        }
        if !best.is_none_or(|s| matches!(s, 403 | 404 | 408 | 480 | 500 | 503)) {
            return false;
        }
        self.fall_back(sid, ctx);
        true
    }

    fn fall_back(&mut self, sid: ServerTxId, ctx: &mut Context) {
        let Some((aor, _)) = ctx.cached.take() else { return };
        for b in ctx.branches.drain(..) {
            self.timer_c.disarm(b.client);
            self.branches.remove(&b.client);
        }
        ctx.best = None;
        ctx.parked = Some(aor.clone());
        self.status.cache_fallbacks += 1;
        self.cache_misses.push_back(aor.clone());
        self.lookups.push_back((sid, aor));
    }

    /// A buddy whose cached contacts failed: the peer drops them from the cache.
    pub fn poll_cache_miss(&mut self) -> Option<String> {
        self.cache_misses.pop_front()
    }

    /// Requests on the cache whose buddy's node has not answered anything in time: their
    /// branches end here and they are looked up.
    pub(super) fn cache_timeout(&mut self, now: Instant, tl: &mut TransactionLayer<Endpoint>) {
        let late: Vec<ServerTxId> = self
            .contexts
            .iter()
            .filter(|(_, c)| !c.final_sent)
            .filter(|(_, c)| c.cached.as_ref().is_some_and(|(_, at)| *at <= now))
            .filter(|(_, c)| c.branches.iter().all(|b| !b.provisional && b.final_code.is_none()))
            .map(|(id, _)| *id)
            .collect();
        for sid in late {
            let Some(mut ctx) = self.contexts.remove(&sid) else { continue };
            for b in &ctx.branches {
                let _ = tl.terminate_client(b.client);
            }
            self.fall_back(sid, &mut ctx);
            self.contexts.insert(sid, ctx);
        }
    }

    /// The next deadline of a request sent on the cache.
    pub(super) fn next_cache_deadline(&self) -> Option<Instant> {
        self.contexts.values().filter(|c| !c.final_sent).filter_map(|c| c.cached.as_ref().map(|(_, at)| *at)).min()
    }
}
