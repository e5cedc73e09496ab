//! Local accounts: who may register on this node's proxy, and the digest secrets to check
//! them with. Pure: the text format and the lookups. Reading and writing the file (mode 0600,
//! replaced atomically) is the daemon's job (`daemon::files::accounts`), and `p2psip account` its CLI.
//!
//! An account keeps `HA1 = H(user:realm:password)` once per algorithm (RFC 8760 §2), never
//! the password: a stolen file lets an attacker register as the user in this realm (as any
//! digest server's would), but does not reveal a password the user may have reused.
//!
//! The file is plain text, one account per line, so an operator can read and audit it:
//! ```text
//! # p2psip accounts v1: AoR realm MD5-HA1 SHA-256-HA1
//! sip:alice@p2p.test p2p.test 6f1e… 3b9c…
//! ```

use std::collections::BTreeMap;

use super::digest::{ha1, Algorithm};
use crate::sip::Uri;

/// The first line of every accounts file.
pub const HEADER: &str = "# p2psip accounts v1: AoR realm MD5-HA1 SHA-256-HA1";

/// One user who may register here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// `sip:user@domain`, canonical (RFC 3261 §10.3 step 5).
    pub aor: String,
    /// The digest user name: the AoR's user part.
    pub username: String,
    /// The digest realm: the AoR's domain.
    pub realm: String,
    /// H(user:realm:password) with MD5, hex (RFC 2617 §3.2.2.2).
    pub ha1_md5: String,
    /// The same with SHA-256 (RFC 7616).
    pub ha1_sha256: String,
}

impl Account {
    /// An account for `aor` with `password`, hashed at once.
    pub fn new(aor: &str, password: &str) -> Result<Account, AccountError> {
        let (aor, username, realm) = canonical_aor(aor)?;
        if password.is_empty() {
            return Err(AccountError::EmptyPassword);
        }
        Ok(Account {
            ha1_md5: ha1(Algorithm::Md5, &username, &realm, password),
            ha1_sha256: ha1(Algorithm::Sha256, &username, &realm, password),
            aor,
            username,
            realm,
        })
    }

    /// The HA1 for `algorithm`.
    pub fn ha1(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.ha1_md5,
            Algorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

/// `sip:user@domain` with a lower-case domain, its user and its domain. Ports, parameters and
/// `sips:` are refused: an AoR names a user, not a place.
pub fn canonical_aor(s: &str) -> Result<(String, String, String), AccountError> {
    let bad = || AccountError::BadAor(s.to_owned());
    let uri = Uri::parse(s.trim()).ok_or_else(bad)?;
    let sip = uri.as_sip().ok_or_else(bad)?;
    if sip.secure || sip.port.is_some() || !sip.params.is_empty() || sip.headers.is_some() || sip.password.is_some() {
        return Err(bad());
    }
    let user = sip.user_unescaped().and_then(|u| String::from_utf8(u).ok()).ok_or_else(bad)?;
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c == ':' || c == '"') {
        return Err(bad());
    }
    let realm = sip.host.to_string().to_ascii_lowercase();
    Ok((sip.aor(), user, realm))
}

/// Why an account or the accounts file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// `…` is not an address of record like sip:alice@p2p.test.
    #[error("`{0}` is not an address of record like sip:alice@p2p.test")]
    BadAor(String),
    /// The password is empty.
    #[error("the password is empty")]
    EmptyPassword,
    /// Accounts file line …: ….
    #[error("accounts file line {line}: {why}")]
    BadLine {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// All accounts, by AoR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    by_aor: BTreeMap<String, Account>,
}

impl Accounts {
    /// Reads the accounts file's text format (one `aor ha1_md5 ha1_sha256` per line).
    pub fn parse(text: &str) -> Result<Accounts, AccountError> {
        let mut by_aor = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why| AccountError::BadLine { line: i + 1, why };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [aor, realm, md5, sha] = fields[..] else { return Err(bad("expected 4 fields")) };
            let (aor, username, aor_realm) = canonical_aor(aor).map_err(|_| bad("bad AoR"))?;
            let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_hex(md5, 32) || !is_hex(sha, 64) {
                return Err(bad("bad HA1"));
            }
            if realm != aor_realm {
                return Err(bad("realm differs from the AoR's domain"));
            }
            let account = Account {
                aor: aor.clone(),
                username,
                realm: realm.to_owned(),
                ha1_md5: md5.to_ascii_lowercase(),
                ha1_sha256: sha.to_ascii_lowercase(),
            };
            by_aor.insert(aor, account);
        }
        Ok(Accounts { by_aor })
    }

    /// Writes the accounts file's text format.
    pub fn encode(&self) -> String {
        let mut out = format!("{HEADER}\n");
        for a in self.by_aor.values() {
            out.push_str(&format!("{} {} {} {}\n", a.aor, a.realm, a.ha1_md5, a.ha1_sha256));
        }
        out
    }

    /// Adds or replaces (a new password) an account.
    pub fn insert(&mut self, account: Account) {
        self.by_aor.insert(account.aor.clone(), account);
    }

    /// Removes the account of `aor`; returns it if it existed.
    pub fn remove(&mut self, aor: &str) -> Option<Account> {
        let (aor, _, _) = canonical_aor(aor).ok()?;
        self.by_aor.remove(&aor)
    }

    /// The account for a canonical AoR.
    pub fn get(&self, aor: &str) -> Option<&Account> {
        self.by_aor.get(aor)
    }

    /// The account a digest `username` in `realm` names.
    pub fn by_user(&self, username: &str, realm: &str) -> Option<&Account> {
        self.by_aor.values().find(|a| a.username == username && a.realm.eq_ignore_ascii_case(realm))
    }

    /// Every account, by AoR.
    pub fn iter(&self) -> impl Iterator<Item = &Account> {
        self.by_aor.values()
    }

    /// How many accounts there are.
    pub fn len(&self) -> usize {
        self.by_aor.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_aor.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_password_kept() {
        let mut accounts = Accounts::default();
        accounts.insert(Account::new("sip:alice@P2P.test", "s3cret-pw").unwrap());
        accounts.insert(Account::new("sip:bob@p2p.test", "other").unwrap());
        let text = accounts.encode();
        assert!(!text.contains("s3cret-pw"));
        assert!(text.starts_with(HEADER));
        let back = Accounts::parse(&text).unwrap();
        assert_eq!(back, accounts);
        let alice = back.get("sip:alice@p2p.test").unwrap();
        assert_eq!(alice.ha1_md5, ha1(Algorithm::Md5, "alice", "p2p.test", "s3cret-pw"));
        assert_eq!(back.by_user("bob", "p2p.test").unwrap().aor, "sip:bob@p2p.test");
        assert!(back.by_user("bob", "other.test").is_none());
    }

    #[test]
    fn bad_input_is_refused() {
        for aor in ["alice", "sip:p2p.test", "sips:a@p2p.test", "sip:a@p2p.test:5060", "tel:+123", "sip:a@b;x=y"] {
            assert!(Account::new(aor, "pw").is_err(), "{aor}");
        }
        assert_eq!(Account::new("sip:a@b", ""), Err(AccountError::EmptyPassword));
        assert!(matches!(Accounts::parse("sip:a@b b 12\n"), Err(AccountError::BadLine { line: 1, .. })));
        let good = Accounts::parse(&{
            let mut a = Accounts::default();
            a.insert(Account::new("sip:a@b", "pw").unwrap());
            a.encode()
        })
        .unwrap();
        let line = good.encode().lines().nth(1).unwrap().replace(" b ", " c ");
        assert!(Accounts::parse(&line).is_err(), "realm must match the AoR");
        let mut a = good.clone();
        assert!(a.remove("sip:a@B").is_some());
        assert!(a.is_empty());
    }
}
