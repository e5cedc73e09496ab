//! Enrollment end to end, with real processes on loopback: `p2psip ca init`, `ca serve`,
//! `p2psip enroll`, and a node that loads the enrolled identity with the CA stopped.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use crate::common::ca::{enroll, run, Ca, TIMEOUT};
use crate::common::{free_addrs, ip, Finished, Node};
use tempfile::TempDir;

fn assert_ok(what: &str, f: &Finished) {
    assert!(f.status.success(), "{what} failed ({}):\nstdout: {}\nstderr: {}", f.status, f.stdout, f.stderr);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[test]
fn enroll_refuse_renew_survive_restart_rate_limit_and_node_identity() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let ca_dir = w.join("ca");
    let init = run(w, &["ca", "init", "--dir", ca_dir.to_str().unwrap(), "--domain", "example.com", "--replicas", "2"]);
    assert_ok("ca init", &init);
    #[cfg(unix)]
    assert_eq!(mode(&ca_dir.join("root-key.pk8")), 0o600);
    let again = run(w, &["ca", "init", "--dir", ca_dir.to_str().unwrap(), "--domain", "example.com"]);
    assert!(!again.status.success() && again.stderr.contains("refusing to overwrite"), "{}", again.stderr);

    let ca = Ca::serve(w, &ca_dir, "127.0.0.71", &[]);
    assert!(init.stdout.contains(&ca.fingerprint), "init and serve print the same fingerprint");

    // No pin, or a wrong one: refused before anything is sent.
    let (alice_dir, bob_dir, mallory_dir) = (w.join("alice"), w.join("bob"), w.join("mallory"));
    let unpinned = run(w, &["enroll", "sip:alice@example.com", "--ca", &ca.url, "--data-dir", "x"]);
    assert!(!unpinned.status.success() && unpinned.stderr.contains("must be pinned"), "{}", unpinned.stderr);
    let wrong = run(
        w,
        &["enroll", "sip:alice@example.com", "--ca", &ca.url, "--data-dir", "x", "--ca-fingerprint", &"AB".repeat(32)],
    );
    assert!(
        !wrong.status.success() && wrong.stderr.contains("does not match the pinned fingerprint"),
        "{}",
        wrong.stderr
    );

    let alice = enroll(w, "sip:alice@example.com", &ca, &alice_dir, &[]);
    assert_ok("enroll alice", &alice);
    assert!(alice.stdout.contains("enrolled sip:alice@example.com (new key)"), "{}", alice.stdout);
    for file in ["identity/key.pk8", "identity/chain.pem", "identity/root.pem", "overlay-config.json"] {
        assert!(alice_dir.join(file).is_file(), "{file} missing");
    }
    #[cfg(unix)]
    assert_eq!(mode(&alice_dir.join("identity/key.pk8")), 0o600);
    let root = ca_dir.join("root.pem");
    let bob = run(
        w,
        &[
            "enroll",
            "sip:bob@example.com",
            "--ca",
            &ca.url,
            "--data-dir",
            bob_dir.to_str().unwrap(),
            "--ca-cert",
            root.to_str().unwrap(),
        ],
    );
    assert_ok("enroll bob (pinned by --ca-cert)", &bob);

    // Another key for alice: refused, clearly, and nothing of it is stored.
    let taken = "sip:alice@example.com is already enrolled with another key";
    let mallory = enroll(w, "sip:alice@example.com", &ca, &mallory_dir, &[]);
    assert!(!mallory.status.success(), "a second key for alice was accepted: {}", mallory.stdout);
    assert!(mallory.stderr.contains(taken) && mallory.stderr.contains("(HTTP 409)"), "{}", mallory.stderr);
    assert!(!mallory_dir.join("identity/chain.pem").exists());
    // The holder's key renews.
    let renew = enroll(w, "sip:alice@example.com", &ca, &alice_dir, &[]);
    assert_ok("renew alice", &renew);
    assert!(renew.stdout.contains("renewed sip:alice@example.com (existing key)"), "{}", renew.stdout);

    // The issued names survive a restart of the CA.
    let mut ca = ca;
    ca.process.terminate();
    assert!(ca.process.wait_exit(TIMEOUT).is_some_and(|s| s.success()), "CA did not stop cleanly: {}", ca.log());
    let ca = Ca::serve(w, &ca_dir, "127.0.0.71", &["--rate-limit", "2/min"]);
    let mallory = enroll(w, "sip:alice@example.com", &ca, &mallory_dir, &[]);
    assert!(!mallory.status.success() && mallory.stderr.contains(taken), "after restart: {}", mallory.stderr);

    // That was the first of two requests this minute; the third is refused with 429.
    assert_ok("enroll carol", &enroll(w, "sip:carol@example.com", &ca, &w.join("carol"), &[]));
    let limited = enroll(w, "sip:dave@example.com", &ca, &w.join("dave"), &[]);
    assert!(!limited.status.success(), "{}", limited.stdout);
    assert!(
        limited.stderr.contains("(HTTP 429)") && limited.stderr.contains("too many enrollment requests"),
        "{}",
        limited.stderr
    );
    drop(ca);

    // A node started on alice's data directory, with every CA stopped, shows who it is.
    let [listen, proxy, http] = free_addrs(ip("127.0.0.71"), 3).try_into().unwrap();
    let mut node = Node::builder("127.0.0.71").addrs([listen, proxy, http]).data_dir(&alice_dir).start();
    let status = node.status_json();
    assert_eq!(status["identity"]["aor"], "sip:alice@example.com", "{status}");
    assert!(status["identity"]["issuer"].as_str().unwrap().contains("example.com"), "{status}");
    assert!(status["identity"]["not_after"].as_u64().unwrap() > 0);
    assert_eq!(status["overlay"]["name"], "example.com", "the overlay name comes from the document");
    assert!(status["node_id"].is_string() && status["counters"].is_object(), "existing fields kept");
    node.process.terminate();
    assert!(node.process.wait_exit(TIMEOUT).is_some());

    // A document altered in the data directory stops the node at start, with one clear line.
    let doc_path = alice_dir.join("overlay-config.json");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let count = r#"\"replicas\":{\"mode\":\"public\",\"count\":"#;
    let tampered = doc.replace(&format!("{count}2"), &format!("{count}1"));
    assert_ne!(tampered, doc, "the test edits the document");
    std::fs::write(&doc_path, tampered).unwrap();
    let refused = run(
        w,
        &[
            "node",
            "--listen",
            &listen.to_string(),
            "--proxy",
            &proxy.to_string(),
            "--http",
            &http.to_string(),
            "--data-dir",
            alice_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(refused.stderr.contains("signature does not verify with the overlay's root key"), "{}", refused.stderr);
}

#[test]
fn email_verification_writes_a_mail_and_the_token_completes() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let ca_dir = w.join("ca");
    let dir = ca_dir.to_str().unwrap();
    assert_ok(
        "ca init",
        &run(w, &["ca", "init", "--dir", dir, "--domain", "mail.test", "--verify", "email", "--secret-replicas"]),
    );
    let ca = Ca::serve(w, &ca_dir, "127.0.0.72", &[]);
    let frank_dir = w.join("frank");

    let first = enroll(w, "sip:frank@mail.test", &ca, &frank_dir, &[]);
    assert_ok("enroll frank (asks for a token)", &first);
    assert!(
        first.stdout.contains("verification pending") && first.stdout.contains("frank@mail.test"),
        "{}",
        first.stdout
    );
    assert!(!frank_dir.join("identity/chain.pem").exists(), "no certificate before the token");
    let mails: Vec<PathBuf> = std::fs::read_dir(ca_dir.join("outbox")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = std::fs::read_to_string(&mails[0]).unwrap();
    assert!(mail.starts_with("To: frank@mail.test\r\n"), "{mail}");
    let token = mail.lines().find_map(|l| l.strip_prefix("token: ")).expect("token line").trim().to_owned();

    let wrong = enroll(w, "sip:frank@mail.test", &ca, &frank_dir, &["--token", "0123"]);
    assert!(!wrong.status.success() && wrong.stderr.contains("(HTTP 403)"), "{}", wrong.stderr);
    let done = enroll(w, "sip:frank@mail.test", &ca, &frank_dir, &["--token", &token]);
    assert_ok("enroll frank with the token", &done);
    assert!(done.stdout.contains("enrolled sip:frank@mail.test"), "{}", done.stdout);
    assert!(frank_dir.join("identity/chain.pem").is_file());
    // Secret replica numbers: the salt reaches the member, privately, and matches the document.
    assert_eq!(
        std::fs::read_to_string(frank_dir.join("identity/replica-secret")).unwrap().trim(),
        std::fs::read_to_string(ca_dir.join("replica-secret")).unwrap().trim()
    );
    #[cfg(unix)]
    assert_eq!(mode(&frank_dir.join("identity/replica-secret")), 0o600);
    // The document frank received is the public one the CA serves to anyone: no salt in it.
    let served = std::fs::read_to_string(frank_dir.join("overlay-config.json")).unwrap();
    let salt = std::fs::read_to_string(ca_dir.join("replica-secret")).unwrap();
    assert!(served.contains("secret_sha256") && !served.contains(salt.trim()), "{served}");
}

/// A one-connection SMTP server: answers like a relay that takes everything and hands back
/// the whole conversation (commands and the DATA payload, as received).
fn tiny_smtp_server(listener: std::net::TcpListener) -> std::thread::JoinHandle<String> {
    use std::io::{BufRead, BufReader, Write};
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut seen = String::new();
        out.write_all(b"220 tiny.test ESMTP\r\n").unwrap();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 {
                return seen;
            }
            seen.push_str(&line);
            let reply: &[u8] = match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                "EHLO" => b"250-tiny.test\r\n250 8BITMIME\r\n",
                "DATA" => {
                    out.write_all(b"354 go ahead\r\n").unwrap();
                    while !seen.ends_with("\r\n.\r\n") {
                        let mut data = String::new();
                        assert_ne!(reader.read_line(&mut data).unwrap(), 0, "closed during DATA: {seen}");
                        seen.push_str(&data);
                    }
                    b"250 queued\r\n"
                }
                "QUIT" => {
                    out.write_all(b"221 bye\r\n").unwrap();
                    return seen;
                }
                _ => b"250 ok\r\n",
            };
            out.write_all(reply).unwrap();
        }
    })
}

#[test]
fn smtp_relay_delivers_the_token_and_a_dead_relay_is_a_502() {
    let work = TempDir::new().unwrap();
    let w = work.path();
    let ca_dir = w.join("ca");
    let dir = ca_dir.to_str().unwrap();
    assert_ok("ca init", &run(w, &["ca", "init", "--dir", dir, "--domain", "relay.test", "--verify", "email"]));
    let relay = std::net::TcpListener::bind("127.0.0.73:0").unwrap();
    let relay_addr = relay.local_addr().unwrap().to_string();
    let server = tiny_smtp_server(relay);
    let ca = Ca::serve(w, &ca_dir, "127.0.0.73", &["--smtp-relay", &relay_addr, "--mail-from", "ca@relay.test"]);
    let gina_dir = w.join("gina");

    let first = enroll(w, "sip:gina@relay.test", &ca, &gina_dir, &[]);
    assert_ok("enroll gina (asks for a token)", &first);
    let seen = server.join().expect("the SMTP server thread");
    assert!(seen.starts_with("EHLO [127.") && seen.contains("]\r\nMAIL FROM"), "{seen}");
    assert!(seen.contains("MAIL FROM:<ca@relay.test>\r\nRCPT TO:<gina@relay.test>\r\nDATA\r\n"), "{seen}");
    assert!(seen.contains("\r\nFrom: ca@relay.test\r\nTo: gina@relay.test\r\n"), "{seen}");
    assert!(seen.ends_with("\r\n.\r\nQUIT\r\n"), "{seen}");
    assert!(!seen.replace("\r\n", "").contains('\n'), "bare LF in the conversation: {seen}");
    let token = seen.lines().find_map(|l| l.strip_prefix("token: ")).expect("token line").trim().to_owned();
    // The outbox file is still written, with the same token.
    let outbox: Vec<PathBuf> = std::fs::read_dir(ca_dir.join("outbox")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert!(std::fs::read_to_string(&outbox[0]).unwrap().contains(&format!("token: {token}")));

    let done = enroll(w, "sip:gina@relay.test", &ca, &gina_dir, &["--token", &token]);
    assert_ok("enroll gina with the mailed token", &done);
    assert!(done.stdout.contains("enrolled sip:gina@relay.test"), "{}", done.stdout);
    assert!(gina_dir.join("identity/chain.pem").is_file());

    // Nothing listens at the relay address any more: the client is told the mail was not sent.
    let hank = enroll(w, "sip:hank@relay.test", &ca, &w.join("hank"), &[]);
    assert!(!hank.status.success(), "{}", hank.stdout);
    assert!(hank.stderr.contains("(HTTP 502)") && hank.stderr.contains("SMTP relay"), "{}", hank.stderr);
    assert!(ca.log().contains("cannot send a verification mail"), "{}", ca.log());
}
