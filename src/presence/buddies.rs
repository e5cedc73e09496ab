//! Buddy-first routing (SOSIMPLE §6, after SPROUT): the verified registration contacts of the
//! buddies our phones watch, kept while their presence dialogs show their nodes alive, so a call
//! or MESSAGE to a buddy goes straight to the buddy's node without a lookup. An entry is only
//! ever what a verified registration record said (a fetch for a call, or presence's own
//! resolution); it goes when presence loses the buddy's node, when the record's contacts
//! expire, or when a request sent on it fails (the proxy then looks the buddy up as before).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::identity::Aor;

/// One buddy's contacts, as its registration record gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    contacts: Vec<String>,
    /// Unix seconds: the earliest expiry among them.
    expires_at: u64,
}

/// What the cache did, for `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheCounters {
    /// Requests to a buddy sent on cached contacts: registration lookups not made.
    pub lookups_saved: u64,
    /// ...of which failed and were looked up after all.
    pub cache_fallbacks: u64,
}

/// The cache (see the module documentation).
#[derive(Debug, Default)]
pub struct BuddyCache {
    entries: BTreeMap<Aor, Entry>,
    counters: CacheCounters,
}

impl BuddyCache {
    /// The contacts to try for `aor` at `unix_now`, if cached and live; a use is counted.
    pub fn take(&mut self, aor: &Aor, unix_now: u64) -> Option<Vec<String>> {
        let entry = self.entries.get(aor)?;
        if entry.expires_at <= unix_now || entry.contacts.is_empty() {
            self.entries.remove(aor);
            return None;
        }
        self.counters.lookups_saved += 1;
        Some(entry.contacts.clone())
    }

    /// What a verified registration record says of buddy `aor` now: its live contacts, each
    /// `(uri, expires_at)`. None live: the buddy is not reachable, nothing is cached.
    pub fn put(&mut self, aor: &Aor, contacts: &[(String, u64)], unix_now: u64) {
        let live: Vec<&(String, u64)> = contacts.iter().filter(|(_, e)| *e > unix_now).collect();
        let Some(expires_at) = live.iter().map(|(_, e)| *e).min() else {
            self.entries.remove(aor);
            return;
        };
        let contacts = live.into_iter().map(|(u, _)| u.clone()).collect();
        self.entries.insert(aor.clone(), Entry { contacts, expires_at });
    }

    /// `aor`'s node answered in its presence dialog at `unix_now`: it is alive where the
    /// cache says, so the entry lasts at least `for_secs` more (its node re-publishes the
    /// record meanwhile).
    pub fn touch(&mut self, aor: &Aor, unix_now: u64, for_secs: u64) {
        if let Some(entry) = self.entries.get_mut(aor) {
            entry.expires_at = entry.expires_at.max(unix_now.saturating_add(for_secs));
        }
    }

    /// `aor`'s node is gone, or a request on the cached contacts failed.
    pub fn forget(&mut self, aor: &Aor) {
        self.entries.remove(aor);
    }

    /// A request sent on cached contacts failed and was looked up after all.
    pub fn fell_back(&mut self, aor: &Aor) {
        self.counters.cache_fallbacks += 1;
        self.forget(aor);
    }

    /// Whether `aor` is cached (for tests and status).
    pub fn holds(&self, aor: &Aor) -> bool {
        self.entries.contains_key(aor)
    }

    /// What the cache did.
    pub fn counters(&self) -> CacheCounters {
        self.counters
    }

    /// Buddies cached now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_contacts_are_used_until_they_expire_or_fail() {
        let mut cache = BuddyCache::default();
        let bob = Aor::parse("sip:bob@p2p.test").unwrap();
        cache.put(&bob, &[("sip:bob@192.0.2.1:5070".into(), 1000), ("sip:bob@192.0.2.2:5070".into(), 10)], 100);
        assert_eq!(cache.take(&bob, 100), Some(vec!["sip:bob@192.0.2.1:5070".to_owned()]), "expired ones left out");
        assert_eq!(cache.take(&bob, 1000), None, "gone at the earliest live expiry");
        cache.put(&bob, &[("sip:bob@192.0.2.1:5070".into(), 1000)], 100);
        cache.fell_back(&bob);
        assert_eq!(cache.take(&bob, 100), None);
        cache.put(&bob, &[], 100);
        assert!(!cache.holds(&bob), "a record without contacts caches nothing");
        assert_eq!(cache.counters(), CacheCounters { lookups_saved: 1, cache_fallbacks: 1 });
    }
}
