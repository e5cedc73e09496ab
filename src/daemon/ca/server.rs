//! `p2psip ca serve`: the enrollment CA over HTTPS (rustls, HTTP/1.1 through hyper).
//!
//! ```text
//! GET  /overlay-config.json          the signed configuration document (200, application/json)
//! POST /enroll?aor=AOR[&token=T]     body: a PKCS#10 request, DER (application/pkcs10) or PEM
//!   200 {"aor", "enrollment": "new"|"renewal", "chain": PEM leaf+root, "replica_secret": hex|null}
//!   202 {"aor", "mailed_to"}         --verify email: a token was mailed; repeat with &token=
//!   400 / 403 / 409 / 429 / 500      one line of text saying why (409: the name has another holder)
//!   502                              --smtp-relay: the relay did not take the verification mail
//! ```
//!
//! The TLS server certificate is issued at start by the root for the listen address,
//! `localhost` and any `--tls-name`, with a fresh key kept in memory. Clients pin the root
//! (its SHA-256 fingerprint is printed at start), so nothing else needs to be trusted. The
//! enrollment rules are `enrollment::desk`'s; this module only moves bytes, persists issued
//! names (redb, `ca_files::IssuedDb`), writes mails to the outbox and, with `--smtp-relay`,
//! also sends them (`smtp`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::files::{self as ca_files, CaError, IssuedDb, LoadedCa};
use super::smtp::{self, SmtpRelay};
use crate::encoding::hex;
use crate::enrollment::desk::{EnrollOutcome, EnrollRequest, EnrollmentDesk, Mail, RateLimiter, VerifyMode};
use crate::enrollment::Enrollment;
use crate::identity::pem::{certificates_to_pem, fingerprint};
use crate::identity::KeyPair;

/// Largest request body accepted (a PKCS#10 request is well under 2 KiB).
const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Time a client has to send its request headers once the handshake is done.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest a connection may stay open, keep-alive included.
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// Clients served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 256;
/// Pause after a failed accept (out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// How long the TLS server certificate is good for (it is re-issued at every start).
const TLS_CERT_LIFETIME: u64 = 30 * 86_400;

/// What `ca serve` is asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The CA's directory.
    pub dir: PathBuf,
    /// The HTTPS address.
    pub listen: SocketAddr,
    /// Enrollment requests per client address per minute.
    pub rate_limit_per_minute: u32,
    /// Extra host names or addresses for the TLS certificate.
    pub tls_names: Vec<String>,
    /// Also send verification mails through this SMTP relay (`HOST:PORT`).
    pub smtp_relay: Option<String>,
    /// The sender of those mails; `p2psip-ca@DOMAIN` when not given.
    pub mail_from: Option<String>,
}

/// A bound, ready CA server.
pub struct CaServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<Mutex<State>>,
    /// The bound address.
    pub addr: SocketAddr,
    /// SHA-256 fingerprint of the root certificate, for clients to pin.
    pub root_fingerprint: String,
    /// The overlay's SIP domain.
    pub domain: String,
    /// How enrollment requests are verified.
    pub verify: VerifyMode,
    /// Names issued so far.
    pub issued: usize,
}

struct State {
    desk: EnrollmentDesk,
    names: IssuedDb,
    limiter: RateLimiter,
    config_doc: Bytes,
    replica_secret: Option<Vec<u8>>,
    outbox: PathBuf,
    url: String,
    mails: u64,
    smtp: Option<SmtpRelay>,
    rng: SystemRandom,
}

impl CaServer {
    /// Loads the CA directory, opens the names database and binds the listener.
    pub async fn bind(opts: &ServeOptions) -> Result<CaServer, CaError> {
        let rng = SystemRandom::new();
        let now = crate::daemon::unix_now();
        let LoadedCa { ca, settings, config_doc, replica_secret, root_not_after } =
            ca_files::load(&opts.dir, now, &rng)?;
        let names = IssuedDb::open(&opts.dir.join(ca_files::ISSUED_DB))?;
        let listener = TcpListener::bind(opts.listen).await.map_err(|source| CaError::Io {
            doing: "listen on",
            path: PathBuf::from(opts.listen.to_string()),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| CaError::Io {
            doing: "read the address of",
            path: PathBuf::from(opts.listen.to_string()),
            source,
        })?;

        let mut hosts = vec!["localhost".to_owned()];
        if !addr.ip().is_unspecified() {
            hosts.push(addr.ip().to_string());
        }
        hosts.extend(opts.tls_names.iter().cloned());
        let tls_key = KeyPair::generate(&rng)?;
        let tls_cert = ca.issue_tls_server(
            &tls_key,
            &hosts,
            now.saturating_sub(300),
            (now + TLS_CERT_LIFETIME).min(root_not_after),
            &rng,
        )?;
        let chain = vec![tls_cert.into(), ca.root_der().to_vec().into()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(tls_key.pkcs8_der().to_vec().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| CaError::Options(format!("TLS setup: {e}")))?;
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let host = if addr.ip().is_unspecified() { "localhost".to_owned() } else { addr.ip().to_string() };
        let url = match addr {
            SocketAddr::V6(_) if host != "localhost" => format!("https://[{host}]:{}", addr.port()),
            _ => format!("https://{host}:{}", addr.port()),
        };
        let root_fingerprint = fingerprint(ca.root_der());
        let domain = ca.domain().to_owned();
        let cert_lifetime = settings.cert_lifetime_days.saturating_mul(86_400);
        let issued = names.len();
        let smtp = match &opts.smtp_relay {
            Some(addr) => {
                let from = opts.mail_from.clone().unwrap_or_else(|| format!("p2psip-ca@{domain}"));
                smtp::check_address(&from).map_err(|e| CaError::Options(format!("--mail-from: {e}")))?;
                Some(SmtpRelay { addr: addr.clone(), from })
            }
            None => None,
        };
        let state = State {
            desk: EnrollmentDesk::new(ca, settings.verify, cert_lifetime, root_not_after),
            names,
            limiter: RateLimiter::new(opts.rate_limit_per_minute),
            config_doc: Bytes::from(config_doc),
            replica_secret,
            outbox: opts.dir.join(ca_files::OUTBOX),
            url,
            mails: 0,
            smtp,
            rng,
        };
        Ok(CaServer {
            listener,
            acceptor,
            state: Arc::new(Mutex::new(state)),
            addr,
            root_fingerprint,
            domain,
            verify: settings.verify,
            issued,
        })
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run_until_signal(self) -> Result<(), CaError> {
        let shutdown = crate::daemon::signal::shutdown_signal()
            .map_err(|e| CaError::Options(format!("cannot install signal handlers: {e}")))?;
        self.run(shutdown).await;
        Ok(())
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        // docs/security.md, M7: at most MAX_CONNECTIONS clients at once, each for at most
        // CONNECTION_LIFETIME, with HEADER_TIMEOUT to send its headers; slow clients cannot pin
        // the CA's descriptors.
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut accept_warned: Option<Instant> = None;
        loop {
            let (tcp, peer) = tokio::select! {
                () = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually out of descriptors: pause instead of spinning, warn once a minute.
                        if accept_warned.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                            warn!(error = %e, "accept failed; pausing new connections");
                            accept_warned = Some(Instant::now());
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(%peer, "too many CA connections; closing this one");
                continue;
            };
            let acceptor = self.acceptor.clone();
            let state = self.state.clone();
            tokio::spawn(async move {
                let _slot = slot;
                // A client that never finishes its handshake does not hold a task for long.
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Err(_) => {
                        debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let service = hyper::service::service_fn(move |req| handle(state.clone(), peer, req));
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service);
                match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                    Ok(Err(e)) => debug!(%peer, error = %e, "connection ended with an error"),
                    Err(_) => debug!(%peer, "connection closed after its lifetime"),
                    Ok(Ok(())) => {}
                }
            });
        }
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: u16, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn text(status: u16, message: &str) -> Answer {
    answer(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

async fn handle(state: Arc<Mutex<State>>, peer: SocketAddr, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let path = req.uri().path().to_owned();
    Ok(match (req.method().clone(), path.as_str()) {
        (Method::GET, "/overlay-config.json") => match state.lock() {
            Ok(s) => answer(200, "application/json", s.config_doc.clone()),
            Err(_) => text(500, "internal error"),
        },
        (Method::POST, "/enroll") => enroll(state, peer, req).await,
        (_, "/enroll" | "/overlay-config.json") => text(405, "method not allowed"),
        _ => text(404, "not found: the CA serves GET /overlay-config.json and POST /enroll"),
    })
}

async fn enroll(state: Arc<Mutex<State>>, peer: SocketAddr, req: Request<Incoming>) -> Answer {
    // The rate limit comes first: a refused client costs no parsing and no signature.
    let limited = match state.lock() {
        // One bucket per IPv4 address or IPv6 /64 (docs/security.md, M7).
        Ok(mut s) => s.limiter.check(crate::addr::source_group(peer.ip()), Instant::now()),
        Err(_) => return text(500, "internal error"),
    };
    if let Err(wait) = limited {
        info!(%peer, "enrollment rate limit");
        let mut response = text(
            429,
            &format!("too many enrollment requests from {}; try again in {} s", peer.ip(), wait.as_secs().max(1)),
        );
        if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
            response.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
        return response;
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| -> Option<String> {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
    };
    let Some(aor) = param("aor") else {
        return text(400, "missing ?aor=sip:user@domain");
    };
    let token = param("token");
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(413, "request body too large or unreadable"),
    };
    let csr_der = match csr_der(&body) {
        Some(der) => der,
        None => return text(400, "the body is not a PKCS#10 certificate request (DER or PEM)"),
    };

    let (answer, relay_mail) = decide(&state, peer, &aor, &csr_der, token.as_deref());
    // The lock is released: sending may take up to smtp::SMTP_TIMEOUT.
    let Some((relay, mail)) = relay_mail else {
        return answer;
    };
    match smtp::send(&relay, &mail).await {
        Ok(()) => {
            info!(%peer, to = %mail.to, relay = %relay.addr, "verification mail sent");
            answer
        }
        Err(e) => {
            warn!(%peer, to = %mail.to, relay = %relay.addr, error = %e, "cannot send a verification mail");
            text(502, "the CA could not send the verification mail through its SMTP relay; try again later")
        }
    }
}

/// The answer, under the state's lock; with a mail still to send through the SMTP relay.
fn decide(
    state: &Mutex<State>,
    peer: SocketAddr,
    aor: &str,
    csr_der: &[u8],
    token: Option<&str>,
) -> (Answer, Option<(SmtpRelay, Mail)>) {
    let Ok(mut guard) = state.lock() else {
        return (text(500, "internal error"), None);
    };
    let s = &mut *guard;
    let now = crate::daemon::unix_now();
    let request = EnrollRequest { aor, csr_der, token };
    let url = s.url.clone();
    match s.desk.handle(&mut s.names, &request, now, &url, &s.rng) {
        Ok(EnrollOutcome::Issued { aor, chain, enrollment }) => {
            if let Err(e) = s.names.commit() {
                s.names.rollback();
                warn!(error = %e, "cannot record an issued name");
                return (text(500, "the CA cannot record the enrollment; try again later"), None);
            }
            let kind = match enrollment {
                Enrollment::New => "new",
                Enrollment::Renewal => "renewal",
            };
            info!(%peer, %aor, enrollment = kind, "issued");
            let body = serde_json::json!({
                "aor": aor.as_str(),
                "enrollment": kind,
                "chain": certificates_to_pem(&chain),
                "replica_secret": s.replica_secret.as_deref().map(hex),
            });
            (answer(200, "application/json", body.to_string()), None)
        }
        Ok(EnrollOutcome::VerificationSent { aor, mail }) => {
            s.mails += 1;
            match ca_files::write_mail(&s.outbox, &mail, now, s.mails) {
                Ok(path) => {
                    info!(%peer, %aor, mail = %path.display(), "verification mail written");
                    let accepted = answer(
                        202,
                        "application/json",
                        serde_json::json!({"aor": aor.as_str(), "mailed_to": mail.to}).to_string(),
                    );
                    (accepted, s.smtp.clone().map(|relay| (relay, mail)))
                }
                Err(e) => {
                    warn!(error = %e, "cannot write a verification mail");
                    (text(500, "the CA cannot send the verification mail"), None)
                }
            }
        }
        Err(refusal) => {
            info!(%peer, aor = %aor, status = refusal.status(), reason = %refusal, "refused");
            (text(refusal.status(), &refusal.to_string()), None)
        }
    }
}

/// The DER of a request sent as DER or as a PEM `CERTIFICATE REQUEST` block.
fn csr_der(body: &[u8]) -> Option<Vec<u8>> {
    if body.starts_with(b"-----BEGIN") {
        let pem = ::pem::parse(body).ok()?;
        (pem.tag() == "CERTIFICATE REQUEST" || pem.tag() == "NEW CERTIFICATE REQUEST").then(|| pem.into_contents())
    } else {
        Some(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_as_der_or_pem() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(csr_der(&der), Some(der.clone()));
        let pem = ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", der.clone()));
        assert_eq!(csr_der(pem.as_bytes()), Some(der.clone()));
        let key = ::pem::encode(&::pem::Pem::new("PRIVATE KEY", der));
        assert_eq!(csr_der(key.as_bytes()), None, "only request blocks");
        assert_eq!(csr_der(b"-----BEGIN nonsense"), None);
    }
}
