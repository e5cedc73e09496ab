//! Who is calling (docs/security.md, M5; RFC 8224's `Identity` header in spirit): a MESSAGE or
//! INVITE that a node sends into the overlay for its phone carries a signature, made with the
//! node's enrolled key, over what says who calls whom and when; the called node checks it
//! against the caller's certificate before any phone rings.
//!
//! What is signed, one field a line (RFC 8224 §5.2 signs the same parts, as a PASSporT):
//!
//! ```text
//! p2psip-identity-1
//! <From AoR>            sip:alice@p2p.test (RFC 3261 §10.3 step 5 canonical form)
//! <To AoR>
//! <Call-ID>
//! <CSeq number> <method>
//! <Date>                as the header carries it (RFC 1123, GMT; added when missing)
//! <SHA-256 of the body, hex>
//! ```
//!
//! The header is `Identity: <signature, base64url>;info=<urn:p2psip:cert>;alg=ES256;cert=<leaf
//! certificate DER, base64url>`: the certificate travels in the request, so the called node
//! needs no lookup; it checks the chain to the overlay's root, that the certificate names the
//! From AoR, the signature, and that Date is within [`MAX_AGE`] of its clock (RFC 8224 §6.2.1.1
//! recommends 60 s; a minute more for clocks that drift). Sans-IO: the caller passes the Unix
//! time and the randomness ECDSA needs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SecureRandom;

use super::{Aor, KeyPair, VerifiedCache};
use crate::sip::{Header, HeaderName, Message, SipUri, Uri};

/// How far a request's Date may be from the checking node's clock, seconds.
pub const MAX_AGE: u64 = 120;
/// The header's name.
pub const HEADER: &str = "Identity";
const DOMAIN: &str = "p2psip-identity-1";

/// Why a request's caller could not be established: the reason phrase of its 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// The request carries no `Identity` header.
    #[error("no Identity header")]
    Missing,
    /// The `Identity` header does not parse.
    #[error("malformed Identity header")]
    Malformed,
    /// The request has no `Date`, or one that does not parse.
    #[error("no Date header, or one that cannot be read")]
    Date,
    /// The `Date` is too far from now (a replay, or a wrong clock).
    #[error("Date is too far from now")]
    Stale,
    /// The certificate does not verify up to the overlay's root.
    #[error("the certificate does not verify: {0}")]
    Certificate(String),
    /// The certificate names another AoR than the request's From.
    #[error("the certificate is for {cert}, not the From {from}")]
    WrongCaller {
        /// The AoR the certificate names.
        cert: String,
        /// The From the request carries.
        from: String,
    },
    /// The signature does not verify with the certificate's key.
    #[error("the signature does not verify")]
    Signature,
}

fn aor_of(uri: &Uri) -> Option<String> {
    uri.as_sip().map(SipUri::aor)
}

/// The bytes a caller's node signs for `msg`, whose Date header is `date`.
fn to_be_signed(msg: &Message, date: &str) -> Option<Vec<u8>> {
    let from = aor_of(&msg.from().ok()?.uri)?;
    let to = aor_of(&msg.to().ok()?.uri)?;
    let cseq = msg.cseq().ok()?;
    let body = ring::digest::digest(&ring::digest::SHA256, &msg.body);
    let body = crate::encoding::hex(body.as_ref());
    let text = format!(
        "{DOMAIN}\n{from}\n{to}\n{}\n{} {}\n{date}\n{body}",
        msg.call_id().ok()?,
        cseq.seq,
        cseq.method.as_str()
    );
    Some(text.into_bytes())
}

/// `unix` as an RFC 1123 date, the form SIP's Date header takes (RFC 3261 §20.17).
pub fn http_date(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&format).unwrap_or_default()
}

/// Reads [`http_date`]'s form back.
pub fn parse_http_date(text: &str) -> Option<u64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(text.trim(), &format).ok()?;
    u64::try_from(t.assume_utc().unix_timestamp()).ok()
}

/// Signs `msg` for its From, as the node holding `key` and the leaf certificate `cert_der`:
/// sets Date (unless it already carries one we can read) and adds the Identity header.
pub fn sign(msg: &mut Message, key: &KeyPair, cert_der: &[u8], unix_now: u64, rng: &dyn SecureRandom) -> Option<()> {
    let date = match msg.headers.get(&HeaderName::Date).and_then(|h| h.value_str().map(str::to_owned)) {
        Some(d) if parse_http_date(&d).is_some() => d,
        _ => {
            let d = http_date(unix_now);
            msg.headers.set(Header::new(HeaderName::Date, &d));
            d
        }
    };
    let data = to_be_signed(msg, &date)?;
    let signature = key.sign(&data, rng).ok()?;
    let value = format!(
        "{};info=<urn:p2psip:cert>;alg=ES256;cert={}",
        URL_SAFE_NO_PAD.encode(signature),
        URL_SAFE_NO_PAD.encode(cert_der)
    );
    msg.headers.remove_all(&HeaderName::other(HEADER));
    msg.headers.push(Header::new(HeaderName::other(HEADER), value));
    Some(())
}

/// Checks `msg`'s Identity against the overlay's root (through `ids`) at `unix_now`, and
/// returns the caller's AoR.
pub fn verify(msg: &Message, ids: &mut VerifiedCache, unix_now: u64) -> Result<Aor, CallerError> {
    let header = msg.headers.get(&HeaderName::other(HEADER)).ok_or(CallerError::Missing)?;
    let value = header.value_str().ok_or(CallerError::Malformed)?;
    let mut parts = value.split(';').map(str::trim);
    let signature = parts.next().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok()).ok_or(CallerError::Malformed)?;
    let cert = parts
        .find_map(|p| p.strip_prefix("cert="))
        .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
        .ok_or(CallerError::Malformed)?;
    let date =
        msg.headers.get(&HeaderName::Date).and_then(|h| h.value_str().map(str::to_owned)).ok_or(CallerError::Date)?;
    let sent = parse_http_date(&date).ok_or(CallerError::Date)?;
    if sent.abs_diff(unix_now) > MAX_AGE {
        return Err(CallerError::Stale);
    }
    let identity = ids.verify(&cert, &[], unix_now).map_err(|e| CallerError::Certificate(e.to_string()))?;
    let from = msg.from().ok().and_then(|f| aor_of(&f.uri)).ok_or(CallerError::Malformed)?;
    if identity.aor.as_str() != from {
        return Err(CallerError::WrongCaller { cert: identity.aor.to_string(), from });
    }
    let data = to_be_signed(msg, &date).ok_or(CallerError::Malformed)?;
    if !identity.public_key.verify(&data, &signature) {
        return Err(CallerError::Signature);
    }
    Ok(identity.aor)
}

#[cfg(test)]
mod tests;
