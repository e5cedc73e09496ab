//! `p2psip enroll`: the client side of enrollment, the only time a node talks to the CA.
//!
//! Trust on first contact is explicit: the user pins the overlay's root certificate, either
//! the file itself (`--ca-cert root.pem`) or its SHA-256 fingerprint (`--ca-fingerprint`, which
//! `p2psip ca serve` prints at start). The TLS server certificate must chain to that root
//! (webpki path validation, host name included), the returned certificate chain must end in
//! it, and the configuration document must be signed by it. Nothing is trusted on first use
//! without a pin, and no system trust store is consulted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::daemon::files::data_dir::{self, DataDirError};
use crate::encoding::unhex;
use crate::enrollment::build_csr;
use crate::enrollment::config_doc::{ConfigDoc, ConfigDocError};
use crate::identity::pem::{certificates_from_pem, fingerprint, parse_fingerprint};
use crate::identity::{Aor, IdentityError, LocalIdentity, TrustAnchor};

/// How long one exchange with the CA may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// What `p2psip enroll` is asked to do.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The AoR to enroll.
    pub aor: String,
    /// `https://host:port`.
    pub ca_url: String,
    /// The node's data directory, where the key, chain and document go.
    pub data_dir: PathBuf,
    /// The root certificate file to pin (PEM).
    pub ca_cert: Option<PathBuf>,
    /// Or its SHA-256 fingerprint.
    pub ca_fingerprint: Option<String>,
    /// The token from a verification mail.
    pub token: Option<String>,
}

/// How enrollment ended.
#[derive(Debug)]
pub enum EnrollResult {
    /// The certificate was issued and written.
    Enrolled {
        /// The AoR it binds.
        aor: Aor,
        /// The name was already ours: a renewal.
        renewal: bool,
        /// When it expires, Unix seconds.
        not_after: u64,
        /// A new key was made (none was in the data directory).
        new_key: bool,
    },
    /// `--verify email`: the CA mailed a token; run again with `--token`.
    Pending {
        /// The AoR asked for.
        aor: Aor,
        /// Where the token went.
        mailed_to: String,
    },
}

/// Why `p2psip enroll` failed.
// Each variant's `#[error]` message says what it means, naming its fields.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot reach the CA at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("the CA at {url} did not answer within {} s", TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("the CA refused the enrollment (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the CA's answer is not usable: {0}")]
    BadAnswer(String),
    #[error("the CA's configuration document was refused: {0}")]
    ConfigDoc(#[from] ConfigDocError),
}

/// Runs one enrollment against the CA and stores the result in the data directory.
pub async fn enroll(opts: &EnrollOptions, unix_now: u64) -> Result<EnrollResult, EnrollError> {
    let aor = Aor::parse(&opts.aor)?;
    let pin = pinned_fingerprint(opts)?;
    let target = Target::parse(&opts.ca_url)?;
    let rng = SystemRandom::new();
    let (key, new_key) = data_dir::key_or_generate(&opts.data_dir, &rng)?;
    let csr = build_csr(&aor, &key, &rng)?;

    let client = Client::new(target, pin)?;
    let (status, config_doc) = client.exchange("GET", "/overlay-config.json", None).await?;
    if status != 200 {
        return Err(EnrollError::Refused { status, message: one_line(&config_doc) });
    }
    let mut path = format!("/enroll?aor={}", encode(aor.as_str()));
    if let Some(token) = &opts.token {
        path.push_str(&format!("&token={}", encode(token)));
    }
    let (status, body) = client.exchange("POST", &path, Some(csr)).await?;
    let json = |body: &[u8]| -> Result<serde_json::Value, EnrollError> {
        serde_json::from_slice(body).map_err(|e| EnrollError::BadAnswer(format!("not JSON: {e}")))
    };
    match status {
        200 => {}
        202 => {
            let answer = json(&body)?;
            let mailed_to = answer["mailed_to"].as_str().unwrap_or("?").to_owned();
            return Ok(EnrollResult::Pending { aor, mailed_to });
        }
        _ => return Err(EnrollError::Refused { status, message: one_line(&body) }),
    }
    let answer = json(&body)?;
    let chain_pem = answer["chain"].as_str().ok_or_else(|| EnrollError::BadAnswer("no chain".into()))?;
    let chain = certificates_from_pem(chain_pem.as_bytes())?;
    let root_der = chain.last().cloned().ok_or_else(|| EnrollError::BadAnswer("empty chain".into()))?;
    if ring::digest::digest(&ring::digest::SHA256, &root_der).as_ref() != pin {
        return Err(EnrollError::BadAnswer("the chain does not end in the pinned root certificate".into()));
    }
    let root = TrustAnchor::new(root_der)?;
    let doc = ConfigDoc::verify(&config_doc, &root, unix_now)?;
    let identity = LocalIdentity::new(key, chain, root, unix_now)?;
    if identity.aor != aor {
        return Err(EnrollError::BadAnswer(format!("the certificate is for {}, not {aor}", identity.aor)));
    }
    let secret = match answer["replica_secret"].as_str() {
        Some(hex) => Some(unhex(hex).ok_or_else(|| EnrollError::BadAnswer("replica_secret is not hex".into()))?),
        None => None,
    };
    doc.replicas.numbers(secret.as_deref())?;
    data_dir::save(&opts.data_dir, &identity, &config_doc, secret.as_deref())?;
    let renewal = answer["enrollment"].as_str() == Some("renewal");
    Ok(EnrollResult::Enrolled { aor, renewal, not_after: identity.not_after, new_key })
}

fn pinned_fingerprint(opts: &EnrollOptions) -> Result<[u8; 32], EnrollError> {
    match (&opts.ca_cert, &opts.ca_fingerprint) {
        (Some(path), None) => {
            let text = std::fs::read(path).map_err(|source| EnrollError::Read { path: path.clone(), source })?;
            let mut certs = certificates_from_pem(&text)?;
            let root = certs.pop().ok_or_else(|| EnrollError::Usage("no certificate in --ca-cert".into()))?;
            let digest = ring::digest::digest(&ring::digest::SHA256, &root);
            let mut pin = [0u8; 32];
            pin.copy_from_slice(digest.as_ref());
            Ok(pin)
        }
        (None, Some(text)) => parse_fingerprint(text).ok_or_else(|| {
            EnrollError::Usage(format!("--ca-fingerprint {text:?} is not a SHA-256 fingerprint (64 hex digits)"))
        }),
        (Some(_), Some(_)) => Err(EnrollError::Usage("give either --ca-cert or --ca-fingerprint, not both".into())),
        (None, None) => Err(EnrollError::Usage(
            "the CA's root must be pinned: pass --ca-fingerprint (printed by `p2psip ca serve`) or --ca-cert ROOT.pem"
                .into(),
        )),
    }
}

/// Percent-encodes a query parameter value (RFC 3986 §3.4: unreserved characters stay).
fn encode(value: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}

fn one_line(body: &[u8]) -> String {
    String::from_utf8_lossy(body).trim().replace('\n', " ")
}

/// Where the CA is: `https://host[:port]`.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Target, EnrollError> {
        let bad = |why: &str| EnrollError::Usage(format!("--ca {url:?}: {why}"));
        let rest = url.strip_prefix("https://").ok_or_else(|| bad("must start with https://"))?;
        let authority = rest.split('/').next().unwrap_or("");
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => 443,
        };
        Ok(Target { url: url.trim_end_matches('/').to_owned(), host: host.to_owned(), port })
    }
}

struct Client {
    target: Target,
    tls: TlsConnector,
}

impl Client {
    fn new(target: Target, pin: [u8; 32]) -> Result<Client, EnrollError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedRoot { pin, provider: provider.clone() });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EnrollError::Connect { url: target.url.clone(), message: format!("TLS setup: {e}") })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Client { target, tls: TlsConnector::from(Arc::new(config)) })
    }

    /// One request on a fresh connection: `(status, body)`.
    async fn exchange(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Vec<u8>), EnrollError> {
        let url = self.target.url.clone();
        tokio::time::timeout(TIMEOUT, self.exchange_inner(method, path, body))
            .await
            .unwrap_or(Err(EnrollError::Timeout { url }))
    }

    async fn exchange_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), EnrollError> {
        let t = &self.target;
        let connect = |message: String| EnrollError::Connect { url: t.url.clone(), message };
        let tcp = TcpStream::connect((t.host.as_str(), t.port)).await.map_err(|e| connect(e.to_string()))?;
        let name = ServerName::try_from(t.host.clone()).map_err(|e| connect(e.to_string()))?;
        let tls = self.tls.connect(name, tcp).await.map_err(|e| connect(format!("TLS: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| connect(e.to_string()))?;
        tokio::spawn(conn);
        let mut request = Request::builder().method(method).uri(path).header(HOST, format!("{}:{}", t.host, t.port));
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/pkcs10");
        }
        let request =
            request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| connect(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| connect(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| connect(e.to_string()))?.to_bytes();
        Ok((status, body.to_vec()))
    }
}

/// Accepts the server's certificate only if it chains (webpki) to the certificate among those
/// it sent whose SHA-256 is the pin.
#[derive(Debug)]
struct PinnedRoot {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedRoot {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = intermediates
            .iter()
            .find(|c| ring::digest::digest(&ring::digest::SHA256, c.as_ref()).as_ref() == self.pin)
            .ok_or_else(|| {
                let sent = intermediates.last().map(|c| fingerprint(c.as_ref())).unwrap_or_else(|| "none".into());
                rustls::Error::General(format!(
                    "the CA's root certificate does not match the pinned fingerprint (it sent {sent})"
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone().into_owned())?;
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
