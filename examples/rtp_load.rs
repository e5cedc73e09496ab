//! The RTP side of `benches/media_load.py`: the script sets the calls up (SIP) and hands this
//! program, on stdin, one line per call: `ALICE_ADDR RELAY_AT_A BOB_ADDR RELAY_AT_B` (the
//! phones' RTP addresses, which it binds, and the relay ports each node gave its phone). For
//! `SECS` seconds after a 2 s warm-up it sends a 172-byte G.711-sized datagram every 20 ms from
//! each phone of each call to its node's relay port, with the send time inside, and counts
//! what reaches the other phone. Prints one JSON line: sent, received, latency p50/p99 (µs).
//!
//! `cargo run --release --example rtp_load -- SECS < calls`
//!
//! A Python loop could not send and receive 40,000 datagrams a second on a shared core; this
//! one (tokio, one task per socket) can, so the node is what runs out first.
// A load generator: it reads the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

const PACKET: usize = 172;
const WARM_UP: Duration = Duration::from_secs(2);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let mut pairs: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let f: Vec<SocketAddr> = line.split_whitespace().map(|a| a.parse().expect("address")).collect();
        if f.len() == 4 {
            pairs.push((f[0], f[1]));
            pairs.push((f[2], f[3]));
        }
    }
    let epoch = Instant::now();
    let measure_from = epoch + WARM_UP;
    let stop = measure_from + Duration::from_secs_f64(secs);
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let mut sockets = Vec::new();
    for (local, relay) in &pairs {
        let s = Arc::new(UdpSocket::bind(local).await.expect("bind a phone's RTP address"));
        let (rx, received, latencies) = (s.clone(), received.clone(), latencies.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok(n) = rx.recv(&mut buf).await {
                if n != PACKET {
                    continue;
                }
                let mut t = [0u8; 8];
                t.copy_from_slice(&buf[12..20]);
                let sent_at = Duration::from_nanos(u64::from_be_bytes(t));
                let at = epoch + sent_at;
                if at >= measure_from && at < stop {
                    received.fetch_add(1, Ordering::Relaxed);
                    let us = epoch.elapsed().saturating_sub(sent_at).as_micros();
                    latencies.lock().expect("lock").push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
        });
        s.connect(relay).await.expect("connect");
        sockets.push(s);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut pkt = [0u8; PACKET];
    pkt[0] = 0x80;
    let mut seq: u16 = 0;
    while Instant::now() < stop {
        tick.tick().await;
        seq = seq.wrapping_add(1);
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        for s in &sockets {
            let now = epoch.elapsed();
            pkt[12..20].copy_from_slice(&(now.as_nanos() as u64).to_be_bytes());
            let counted = epoch + now >= measure_from && epoch + now < stop;
            if s.send(&pkt).await.is_ok() && counted {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // The last datagrams' way through both nodes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lat = latencies.lock().expect("lock").clone();
    lat.sort_unstable();
    let pct =
        |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "{{\"sent\": {}, \"received\": {}, \"p50_us\": {}, \"p99_us\": {}}}",
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99)
    );
}
