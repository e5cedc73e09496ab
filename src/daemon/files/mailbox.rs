//! The mailbox's files in the data directory: our user's X25519 encryption key
//! (`identity/encryption.key`, 32 raw bytes, mode 0600, made at first start and kept: messages
//! waiting in the overlay are sealed to it), and the delivery log
//! (`mailbox/delivered.jsonl`, mode 0600: one JSON line per message and phone, appended as
//! phones answer, compacted at start; `crate::mailbox::log`).

use std::io::Write;
use std::path::Path;

use tracing::warn;

use super::layout;
use crate::identity::hpke::EncryptionKeyPair;
use crate::mailbox::log::{read_lines, Delivered};

/// Why a mailbox file could not be used: one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct MailboxFileError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn error(path: &Path, e: impl std::fmt::Display) -> MailboxFileError {
    MailboxFileError { path: path.display().to_string(), message: e.to_string() }
}

/// Our encryption key: read from the data directory, or made from `seed` (the OS's
/// randomness) and written there when there is none.
pub fn load_or_create_key(data_dir: &Path, seed: [u8; 32]) -> Result<EncryptionKeyPair, MailboxFileError> {
    let path = data_dir.join(layout::ENCRYPTION_KEY);
    match std::fs::read(&path) {
        Ok(bytes) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o600);
                if mode & 0o077 != 0 {
                    warn!(path = %path.display(), mode = format!("{mode:o}"), "encryption key readable by others; set to 0600");
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
                }
            }
            EncryptionKeyPair::from_private_bytes(&bytes).map_err(|e| error(&path, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = EncryptionKeyPair::generate(seed);
            let tmp = path.with_extension("tmp");
            let written = super::open_private(&tmp, false)
                .and_then(|mut f| f.write_all(&key.private_bytes()).and_then(|()| f.sync_all()))
                .and_then(|()| std::fs::rename(&tmp, &path));
            written.map_err(|e| error(&path, e))?;
            Ok(key)
        }
        Err(e) => Err(error(&path, e)),
    }
}

/// The delivery log's entries still current at `unix_now`; the file is rewritten without the
/// others (and without lines a crash cut short).
pub fn load_delivered(data_dir: &Path, unix_now: u64) -> Result<Vec<Delivered>, MailboxFileError> {
    let path = data_dir.join(layout::DELIVERED);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(error(&path, e)),
    };
    let entries: Vec<Delivered> = read_lines(&text).into_iter().filter(|e| e.current(unix_now)).collect();
    let compacted: String = entries.iter().map(|e| e.to_line() + "\n").collect();
    if compacted != text {
        let tmp = path.with_extension("tmp");
        let written = super::open_private(&tmp, false)
            .and_then(|mut f| f.write_all(compacted.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        written.map_err(|e| error(&path, e))?;
    }
    Ok(entries)
}

/// Appends one entry to the delivery log, durably (a message delivered and then deleted must
/// not come back after a crash).
pub fn append_delivered(data_dir: &Path, entry: &Delivered) -> Result<(), MailboxFileError> {
    let path = data_dir.join(layout::DELIVERED);
    super::open_private(&path, true)
        .and_then(|mut f| f.write_all((entry.to_line() + "\n").as_bytes()).and_then(|()| f.sync_data()))
        .map_err(|e| error(&path, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn entry(id: &str, expires_at: u64) -> Delivered {
        Delivered {
            id: id.into(),
            device: "<urn:uuid:1>".into(),
            from: "sip:alice@example.com".into(),
            display: "Alice".into(),
            date: "Mon, 07 Dec 2026 10:00:00 GMT".into(),
            body: "hi".into(),
            delivered_at: 100,
            expires_at,
        }
    }

    #[test]
    fn the_key_is_made_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create_key(dir.path(), [7; 32]).unwrap();
        let path = dir.path().join(layout::ENCRYPTION_KEY);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = load_or_create_key(dir.path(), [9; 32]).unwrap();
        assert_eq!(made.public_bytes(), again.public_bytes(), "the second start reads the first key");
        std::fs::write(&path, b"short").unwrap();
        assert!(load_or_create_key(dir.path(), [9; 32]).is_err(), "a damaged key is an error, not a new key");
    }

    #[test]
    fn the_log_keeps_current_entries_and_drops_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        append_delivered(dir.path(), &entry("aa", 1_000_000)).unwrap();
        append_delivered(dir.path(), &entry("bb", 10)).unwrap();
        let path = dir.path().join(layout::DELIVERED);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"cc\",\"dev").unwrap();
        let loaded = load_delivered(dir.path(), 500_000).unwrap();
        assert_eq!(loaded.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["aa"]);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1, "compacted");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
