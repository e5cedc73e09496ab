//! B9: signed registrations verified per second on one core, against ring's raw ECDSA P-256
//! verify of the same bytes (docs/performance.md, "B9 Signed registrations verified").
//!
//! `raw`: `PublicKey::verify` of a registration's to-be-signed bytes and signature, nothing
//! else (the reference). `check_store`: what a storing node or a reader runs on a copy
//! ([`p2psip::store::check_store`]: size, chain through the certificate cache (a hit: the
//! chain was verified once before), owner, USER-MATCH, encoding, signature, expiry, quota).
//! The target is at least 0.8× the raw rate, so the ratio raw time / check time is printed
//! by criterion's two lines: time per verify.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use p2psip::identity::VerifiedCache;
use p2psip::sim::records::{RecordSet, SIM_UNIX_TIME};
use p2psip::store::{check_store, OwnerUsage, StorePolicy};

fn bench(c: &mut Criterion) {
    let set = RecordSet::new(1).expect("a CA and one signed registration");
    let record = &set.records[0];
    let policy = StorePolicy::default();
    let mut cache = VerifiedCache::new(set.root.clone(), 16);
    let identity = check_store(record, None, OwnerUsage::default(), &policy, SIM_UNIX_TIME, &mut cache)
        .expect("the record verifies");
    let tbs = record.to_be_signed().expect("encodes");
    let mut group = c.benchmark_group("verify_registration");
    group.bench_function("raw", |b| b.iter(|| assert!(identity.public_key.verify(&tbs, &record.signature))));
    group.bench_function("check_store", |b| {
        b.iter(|| check_store(record, None, OwnerUsage::default(), &policy, SIM_UNIX_TIME, &mut cache).is_ok())
    });
    group.finish();
}

// criterion_group! makes public functions without docs.
#[allow(missing_docs)]
mod groups {
    use super::*;

    criterion_group! {
        name = verify;
        config = Criterion::default().sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        targets = bench
    }
}
criterion_main!(groups::verify);
