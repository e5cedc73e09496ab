//! One offline message as it is sealed: what of the phone's MESSAGE survives the trip (From's
//! display name, Date, Content-Type, body), the HPKE seal to the recipient's encryption key,
//! and the signed record that carries it (`crate::store::mailbox`).
//!
//! ```text
//! plaintext:  "p2pM" | version u8 = 1 | display_len u16 | display | date_len u16 | date
//!             | type_len u16 | content_type | body_len u32 | body          (big-endian)
//! payload:    HPKE Base seal of the plaintext (enc ‖ ciphertext, RFC 9180 §6.1)
//!             info = "p2psip offline message 1"
//!             aad  = the record's resource name ‖ 0x00 ‖ the sender's AoR
//! ```
//!
//! The AAD binds the ciphertext to its mailbox, its message ID and its sender, so nobody can
//! move a sealed message to another name or sign it as their own. The sender's address is
//! never taken from the plaintext: it is the record's owner, as its certificate proves.

use crate::identity::hpke::{self, EncryptionKeyPair, HpkeError};
use crate::identity::Aor;

const MAGIC: &[u8; 4] = b"p2pM";
const VERSION: u8 = 1;
/// HPKE's `info` for offline messages: a key used for anything else never opens one.
pub const INFO: &[u8] = b"p2psip offline message 1";

/// What the recipient's phone is handed, besides the sender's verified AoR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The display name of the original From, if any (unverified, as any display name).
    pub display: String,
    /// The original Date header (RFC 1123), as the sender's node saw or stamped it.
    pub date: String,
    /// The original Content-Type.
    pub content_type: String,
    /// The original body.
    pub body: Vec<u8>,
}

/// Why a sealed message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LetterError {
    /// HPKE failed: not sealed to our key, or altered.
    #[error(transparent)]
    Hpke(#[from] HpkeError),
    /// Opened, but not a letter of this version.
    #[error("not an offline message")]
    Malformed,
    /// A field is longer than its length prefix.
    #[error("the message does not fit the format")]
    TooLong,
}

/// The AAD of a message named `key` from `sender`.
pub fn aad(key: &str, sender: &Aor) -> Vec<u8> {
    let mut out = key.as_bytes().to_vec();
    out.push(0);
    out.extend_from_slice(sender.as_str().as_bytes());
    out
}

impl Letter {
    /// The plaintext encoding.
    pub fn encode(&self) -> Result<Vec<u8>, LetterError> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        for field in [self.display.as_bytes(), self.date.as_bytes(), self.content_type.as_bytes()] {
            let len = u16::try_from(field.len()).map_err(|_| LetterError::TooLong)?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(field);
        }
        let len = u32::try_from(self.body.len()).map_err(|_| LetterError::TooLong)?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// Reads [`Letter::encode`]'s form; the whole input must be one letter.
    pub fn decode(bytes: &[u8]) -> Result<Letter, LetterError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(LetterError::Malformed)?;
        let (&version, mut rest) = rest.split_first().ok_or(LetterError::Malformed)?;
        if version != VERSION {
            return Err(LetterError::Malformed);
        }
        let mut fields = Vec::with_capacity(3);
        for _ in 0..3 {
            let len = usize::from(u16::from_be_bytes(
                rest.get(..2).ok_or(LetterError::Malformed)?.try_into().map_err(|_| LetterError::Malformed)?,
            ));
            let field = rest.get(2..2 + len).ok_or(LetterError::Malformed)?;
            fields.push(String::from_utf8(field.to_vec()).map_err(|_| LetterError::Malformed)?);
            rest = &rest[2 + len..];
        }
        let len = u32::from_be_bytes(
            rest.get(..4).ok_or(LetterError::Malformed)?.try_into().map_err(|_| LetterError::Malformed)?,
        ) as usize;
        let body = rest.get(4..).filter(|b| b.len() == len).ok_or(LetterError::Malformed)?.to_vec();
        let content_type = fields.pop().unwrap_or_default();
        let date = fields.pop().unwrap_or_default();
        let display = fields.pop().unwrap_or_default();
        Ok(Letter { display, date, content_type, body })
    }

    /// The record payload: this letter sealed to `recipient_key` for the message named `key`
    /// from `sender`; `seed` is 32 bytes of fresh randomness.
    pub fn seal(&self, recipient_key: &[u8], key: &str, sender: &Aor, seed: [u8; 32]) -> Result<Vec<u8>, LetterError> {
        Ok(hpke::seal(recipient_key, INFO, &aad(key, sender), &self.encode()?, seed)?)
    }

    /// Opens a record payload sealed to `ours` for the message named `key` from `sender`.
    pub fn open(ours: &EncryptionKeyPair, key: &str, sender: &Aor, payload: &[u8]) -> Result<Letter, LetterError> {
        Letter::decode(&ours.open(INFO, &aad(key, sender), payload)?)
    }
}
