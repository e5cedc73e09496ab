//! `p2psip service`: the node as a background service of systemd, the way a laptop runs it.
//! A user unit by default (`~/.config/systemd/user/p2psip.service`, no root needed, started
//! with the user's session), a system unit with `--system`. The unit runs `p2psip node` with
//! the user's settings file and restarts it when it fails; its log goes to the journal
//! (`journalctl --user -u p2psip`), where the node leaves out its own timestamps and colours.

use std::path::{Path, PathBuf};

/// The unit's file name.
pub const UNIT_NAME: &str = "p2psip.service";

/// What the unit runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The `p2psip` binary.
    pub binary: PathBuf,
    /// `--config`, when the user has a settings file.
    pub config: Option<PathBuf>,
    /// A system unit (else a user unit).
    pub system: bool,
}

/// Why the unit could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No directory to put a user unit in.
    #[error("no home directory to put a user unit in (set HOME, or give --unit-dir)")]
    NoHome,
    /// A path that systemd cannot take in ExecStart.
    #[error("{0}: systemd cannot run a path with spaces, quotes or control characters")]
    BadPath(PathBuf),
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether a path can stand in ExecStart as it is.
fn plain(path: &Path) -> bool {
    path.to_str().is_some_and(|s| {
        !s.is_empty() && s.chars().all(|c| !c.is_whitespace() && !c.is_control() && !"\"'\\%$;".contains(c))
    })
}

impl Unit {
    /// The unit file's text.
    pub fn text(&self) -> Result<String, ServiceError> {
        for path in std::iter::once(&self.binary).chain(&self.config) {
            if !plain(path) {
                return Err(ServiceError::BadPath(path.clone()));
            }
        }
        let config = self.config.as_ref().map(|c| format!(" --config {}", c.display())).unwrap_or_default();
        let wanted_by = if self.system { "multi-user.target" } else { "default.target" };
        Ok(format!(
            "[Unit]\n\
             Description=p2psip node: peer-to-peer SIP for the softphones on this machine\n\
             Documentation=man:p2psip(1)\n\
             After=network-online.target\n\
             Wants=network-online.target\n\
             \n\
             [Service]\n\
             Type=exec\n\
             ExecStart={binary} node{config}\n\
             # SIGTERM makes the node leave the ring (its neighbours take over at once).\n\
             KillSignal=SIGTERM\n\
             TimeoutStopSec=15\n\
             Restart=on-failure\n\
             RestartSec=5\n\
             NoNewPrivileges=yes\n\
             \n\
             [Install]\n\
             WantedBy={wanted_by}\n",
            binary = self.binary.display(),
        ))
    }
}

/// Where units go: `dir` if given, else the user's or the system's unit directory.
pub fn unit_dir(dir: Option<&Path>, system: bool) -> Result<PathBuf, ServiceError> {
    if let Some(dir) = dir {
        return Ok(dir.to_owned());
    }
    if system {
        return Ok(PathBuf::from("/etc/systemd/system"));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or(ServiceError::NoHome)?;
    Ok(config.join("systemd/user"))
}

/// Writes the unit into `dir`; returns its path.
pub fn install(unit: &Unit, dir: &Path) -> Result<PathBuf, ServiceError> {
    let text = unit.text()?;
    let path = dir.join(UNIT_NAME);
    let io = |source| ServiceError::Io { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(&path, text).map_err(io)?;
    Ok(path)
}

/// Removes the unit from `dir`; false when there was none.
pub fn uninstall(dir: &Path) -> Result<bool, ServiceError> {
    let path = dir.join(UNIT_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ServiceError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_unit_runs_the_node_with_the_settings_and_restarts_it() {
        let unit = Unit {
            binary: "/usr/bin/p2psip".into(),
            config: Some("/home/a/.config/p2psip/node.toml".into()),
            system: false,
        };
        let text = unit.text().unwrap();
        assert!(text.contains("ExecStart=/usr/bin/p2psip node --config /home/a/.config/p2psip/node.toml\n"), "{text}");
        assert!(text.contains("Restart=on-failure") && text.contains("WantedBy=default.target"), "{text}");
        let system = Unit { system: true, config: None, ..unit };
        assert!(system.text().unwrap().contains("ExecStart=/usr/bin/p2psip node\n"));
        assert!(system.text().unwrap().contains("WantedBy=multi-user.target"));
        let odd = Unit { binary: "/opt/my p2psip/p2psip".into(), config: None, system: false };
        assert!(matches!(odd.text(), Err(ServiceError::BadPath(_))));
    }

    #[test]
    fn install_then_uninstall_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let unit = Unit { binary: "/usr/bin/p2psip".into(), config: None, system: false };
        let path = install(&unit, dir.path()).unwrap();
        assert_eq!(path, dir.path().join(UNIT_NAME));
        assert!(uninstall(dir.path()).unwrap());
        assert!(!uninstall(dir.path()).unwrap(), "nothing left to remove");
    }
}
