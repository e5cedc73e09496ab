//! The local API's token (`http-token` in the data directory, mode 0600): what a request that
//! changes the node's state must carry (`Authorization: Bearer <token>`). Reading the status
//! needs none; stopping the node does. Only the user who runs the node can read the file, so
//! another account on the same machine, which can reach 127.0.0.1 too, cannot act for them.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::encoding::hex;

/// Bytes of randomness in a token (64 hex digits).
const TOKEN_BYTES: usize = 32;

/// The token file's path in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(super::layout::HTTP_TOKEN)
}

/// The token kept in `data_dir`, or a new one made from `random` (the OS's randomness) and
/// written there (mode 0600) when there is none or it is not a token.
pub fn load_or_create(data_dir: &Path, random: [u8; TOKEN_BYTES]) -> std::io::Result<String> {
    if let Some(token) = read(data_dir) {
        return Ok(token);
    }
    let token = hex(&random);
    let path = path(data_dir);
    let tmp = path.with_extension("tmp");
    let mut file = super::open_private(&tmp, false)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

/// The token in `data_dir`, if the file holds one.
pub fn read(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path(data_dir)).ok()?;
    let token = text.trim();
    (token.len() == 2 * TOKEN_BYTES && token.bytes().all(|b| b.is_ascii_hexdigit())).then(|| token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_with_mode_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), [7; TOKEN_BYTES]).unwrap();
        assert_eq!(first.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(path(dir.path())).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(load_or_create(dir.path(), [9; TOKEN_BYTES]).unwrap(), first);
        std::fs::write(path(dir.path()), "not a token").unwrap();
        assert_ne!(load_or_create(dir.path(), [9; TOKEN_BYTES]).unwrap(), first);
    }
}
