//! The body part one node's ICE agent hands the other's (`docs/media-security.md`, "On the
//! wire"): an `application/trickle-ice-sdpfrag` (RFC 8840 §9) beside the phone's SDP in the
//! INVITE, and in the callee node's 18x and 2xx. The phones never see it: the node that
//! receives it takes it out of the message.
//!
//! ```text
//! a=ice-ufrag:<ufrag>                       RFC 8839 §5.4
//! a=ice-pwd:<pwd>
//! a=candidate:<foundation> 1 udp <priority> <ip> <port> typ host|srflx|relay [raddr .. rport ..]
//! a=end-of-candidates                        RFC 8840 §9: gathering was complete
//! a=p2psip-key:<P-256 share, base64>         this project's: the signed ECDH share
//! a=p2psip-sig:<ECDSA signature, base64>     over the transcript of `keys`
//! a=p2psip-cert:<leaf certificate DER, base64>   the signer's certificate
//! ```
//!
//! Limits keep what an attacker can make us hold small: at most [`MAX_CANDIDATES`] candidates,
//! lines of at most 2048 bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::keys::Share;

/// The media type of the part (RFC 8840 §9).
pub const SUBTYPE: &str = "trickle-ice-sdpfrag";
/// Candidates read from one part; the rest are ignored.
pub const MAX_CANDIDATES: usize = 8;
const MAX_LINE: usize = 2048;

/// One node's ICE description, key share and proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frag {
    /// Credentials and the ECDH share.
    pub share: Share,
    /// `a=candidate` values (without the `candidate:` prefix).
    pub candidates: Vec<String>,
    /// The signature over the share (`keys::sign_offer` or `sign_answer`).
    pub signature: Vec<u8>,
    /// The signer's leaf certificate, DER.
    pub cert: Vec<u8>,
}

/// Why a part was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragError {
    /// A required line is missing (its name).
    #[error("ICE part without {0}")]
    Missing(&'static str),
    /// A line is not text, too long, or its value does not decode.
    #[error("malformed ICE part line: {0}")]
    Malformed(String),
}

impl Frag {
    /// The part's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::new();
        s.push_str(&format!("a=ice-ufrag:{}\r\na=ice-pwd:{}\r\n", self.share.ufrag, self.share.pwd));
        for c in &self.candidates {
            s.push_str(&format!("a=candidate:{c}\r\n"));
        }
        s.push_str("a=end-of-candidates\r\n");
        s.push_str(&format!("a=p2psip-key:{}\r\n", STANDARD.encode(&self.share.public)));
        s.push_str(&format!("a=p2psip-sig:{}\r\n", STANDARD.encode(&self.signature)));
        s.push_str(&format!("a=p2psip-cert:{}\r\n", STANDARD.encode(&self.cert)));
        s.into_bytes()
    }

    /// Reads a part; unknown lines are skipped (RFC 8840 lets a frag carry more).
    pub fn parse(body: &[u8]) -> Result<Frag, FragError> {
        let text = std::str::from_utf8(body).map_err(|_| FragError::Malformed("not UTF-8".into()))?;
        let (mut ufrag, mut pwd, mut key, mut sig, mut cert) = (None, None, None, None, None);
        let mut candidates = Vec::new();
        for line in text.lines() {
            if line.len() > MAX_LINE {
                return Err(FragError::Malformed("line too long".into()));
            }
            let Some(attr) = line.strip_prefix("a=") else { continue };
            let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
            let b64 = |v: &str| STANDARD.decode(v.trim()).map_err(|_| FragError::Malformed(name.to_string()));
            match name {
                "ice-ufrag" => ufrag = Some(ice_chars(value, 4, 256, name)?),
                "ice-pwd" => pwd = Some(ice_chars(value, 22, 256, name)?),
                "candidate" if candidates.len() < MAX_CANDIDATES => candidates.push(value.trim().to_string()),
                "p2psip-key" => key = Some(b64(value)?),
                "p2psip-sig" => sig = Some(b64(value)?),
                "p2psip-cert" => cert = Some(b64(value)?),
                _ => {}
            }
        }
        Ok(Frag {
            share: Share {
                ufrag: ufrag.ok_or(FragError::Missing("a=ice-ufrag"))?,
                pwd: pwd.ok_or(FragError::Missing("a=ice-pwd"))?,
                public: key.ok_or(FragError::Missing("a=p2psip-key"))?,
            },
            candidates,
            signature: sig.ok_or(FragError::Missing("a=p2psip-sig"))?,
            cert: cert.ok_or(FragError::Missing("a=p2psip-cert"))?,
        })
    }
}

/// RFC 8839 §5.4: ice-char = ALPHA / DIGIT / "+" / "/", ufrag 4–256, pwd 22–256.
fn ice_chars(v: &str, min: usize, max: usize, name: &str) -> Result<String, FragError> {
    let v = v.trim();
    let ok = (min..=max).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    ok.then(|| v.to_string()).ok_or_else(|| FragError::Malformed(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag() -> Frag {
        Frag {
            share: Share { ufrag: "abcd".into(), pwd: "0123456789012345678901".into(), public: vec![4; 65] },
            candidates: vec!["1 1 udp 2130706431 10.0.0.2 40000 typ host".into()],
            signature: vec![1, 2, 3],
            cert: vec![9; 40],
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(Frag::parse(&frag().encode()).unwrap(), frag());
    }

    #[test]
    fn refusals() {
        let text = String::from_utf8(frag().encode()).unwrap();
        let without = |prefix: &str| text.lines().filter(|l| !l.starts_with(prefix)).collect::<Vec<_>>().join("\r\n");
        assert_eq!(Frag::parse(without("a=ice-pwd").as_bytes()), Err(FragError::Missing("a=ice-pwd")));
        assert_eq!(Frag::parse(without("a=p2psip-cert").as_bytes()), Err(FragError::Missing("a=p2psip-cert")));
        let short_pwd = text.replace("0123456789012345678901", "short");
        assert!(matches!(Frag::parse(short_pwd.as_bytes()), Err(FragError::Malformed(_))));
        let bad_b64 = text.replace("a=p2psip-sig:", "a=p2psip-sig:!!");
        assert!(matches!(Frag::parse(bad_b64.as_bytes()), Err(FragError::Malformed(_))));
        assert!(Frag::parse(&[0xff, 0xfe]).is_err());
        let many: String = (0..20).map(|i| format!("a=candidate:{i} 1 udp 1 10.0.0.1 {i} typ host\r\n")).collect();
        let f = Frag::parse(format!("{text}{many}").as_bytes()).unwrap();
        assert_eq!(f.candidates.len(), MAX_CANDIDATES);
    }
}
