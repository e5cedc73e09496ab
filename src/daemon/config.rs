//! The node's settings: the TOML file schema (`p2psip node --config FILE`), its defaults, and
//! how command-line flags override it.
//!
//! Unknown keys are rejected, so a typo does not silently fall back to a default. Reading the
//! file and creating the data directory are the only I/O here; parsing and merging are pure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything `p2psip node` needs to start. Every key is optional in the file.
///
/// ```toml
/// listen = "0.0.0.0:5070"      # overlay (node-to-node) SIP, UDP and TCP
/// proxy = "127.0.0.1:5060"     # where local softphones register, UDP and TCP
/// http = "127.0.0.1:5090"      # status API
/// join = ["192.0.2.7:5070"]    # peers to join the overlay through
/// domain = "p2p.test"
/// max_datagram_size = 16384
/// data_dir = "/var/lib/p2psip"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Overlay (node-to-node) SIP address, UDP and TCP.
    pub listen: SocketAddr,
    /// Softphone-facing proxy address, UDP and TCP.
    pub proxy: SocketAddr,
    /// Local HTTP status API address.
    pub http: SocketAddr,
    /// Known nodes to join the overlay through.
    pub join: Vec<SocketAddr>,
    /// The SIP domain local phones register in.
    pub domain: String,
    /// UDP datagrams larger than this are dropped unread.
    pub max_datagram_size: usize,
    /// Where the node keeps its state; `$XDG_DATA_HOME/p2psip` when unset.
    pub data_dir: Option<PathBuf>,
}

pub const DEFAULT_LISTEN: &str = "0.0.0.0:5070";
pub const DEFAULT_PROXY: &str = "127.0.0.1:5060";
pub const DEFAULT_HTTP: &str = "127.0.0.1:5090";
pub const DEFAULT_DOMAIN: &str = "p2p.test";
pub const DEFAULT_MAX_DATAGRAM_SIZE: usize = 16 * 1024;
/// The UDP receive buffer's size: no datagram (IPv6 jumbograms aside) is larger.
pub const MAX_DATAGRAM_SIZE_LIMIT: usize = 65_535;

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5070)),
            proxy: SocketAddr::from(([127, 0, 0, 1], 5060)),
            http: SocketAddr::from(([127, 0, 0, 1], 5090)),
            join: Vec::new(),
            domain: DEFAULT_DOMAIN.into(),
            max_datagram_size: DEFAULT_MAX_DATAGRAM_SIZE,
            data_dir: None,
        }
    }
}

/// Settings given on the command line; each one that is set replaces the file's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub proxy: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// Replaces the file's list when not empty.
    pub join: Vec<SocketAddr>,
    pub domain: Option<String>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {} (line {line}, column {column}): {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot find a home directory for the default data directory; pass --data-dir")]
    NoDataDir,
    #[error("cannot create data directory {}", path.display())]
    CreateDataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml(&text, path)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_column(text, s.start)).unwrap_or((1, 1));
            // One line: the error goes to a terminal as a single `error:` line.
            let message = e.message().trim().replace('\n', "; ");
            ConfigError::Parse { path: path.to_owned(), line, column, message }
        })
    }

    pub fn apply(&mut self, o: Overrides) {
        if let Some(a) = o.listen {
            self.listen = a;
        }
        if let Some(a) = o.proxy {
            self.proxy = a;
        }
        if let Some(a) = o.http {
            self.http = a;
        }
        if !o.join.is_empty() {
            self.join = o.join;
        }
        if let Some(d) = o.domain {
            self.domain = d;
        }
        if let Some(d) = o.data_dir {
            self.data_dir = Some(d);
        }
    }

    /// Checks what the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_DATAGRAM_SIZE_LIMIT).contains(&self.max_datagram_size) {
            return Err(ConfigError::Invalid {
                key: "max_datagram_size",
                message: format!("{} is not between 1 and {MAX_DATAGRAM_SIZE_LIMIT}", self.max_datagram_size),
            });
        }
        if self.domain.is_empty() || self.domain.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(ConfigError::Invalid {
                key: "domain",
                message: format!("{:?} is not a domain name", self.domain),
            });
        }
        Ok(())
    }

    /// The data directory: the configured one, else `$XDG_DATA_HOME/p2psip`.
    pub fn data_dir(&self) -> Result<PathBuf, ConfigError> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => directories::ProjectDirs::from("", "", "p2psip")
                .map(|p| p.data_dir().to_owned())
                .ok_or(ConfigError::NoDataDir),
        }
    }

    /// Creates the data directory if it is missing and returns it.
    pub fn create_data_dir(&self) -> Result<PathBuf, ConfigError> {
        let path = self.data_dir()?;
        std::fs::create_dir_all(&path).map_err(|source| ConfigError::CreateDataDir { path: path.clone(), source })?;
        Ok(path)
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        let d = Config::default();
        assert_eq!(d.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(d.proxy.to_string(), DEFAULT_PROXY);
        assert_eq!(d.http.to_string(), DEFAULT_HTTP);
    }

    #[test]
    fn file_values_and_overrides() {
        let mut c = parse(
            "listen = \"127.0.0.1:6000\"\njoin = [\"10.0.0.1:5070\"]\ndomain = \"example.org\"\n\
             max_datagram_size = 1500\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.max_datagram_size, 1500);
        c.apply(Overrides { listen: Some("127.0.0.2:7000".parse().unwrap()), ..Overrides::default() });
        assert_eq!(c.listen, "127.0.0.2:7000".parse().unwrap());
        assert_eq!(c.join, vec!["10.0.0.1:5070".parse().unwrap()], "an empty --join keeps the file's list");
        assert_eq!(c.domain, "example.org");
        c.apply(Overrides { join: vec!["10.0.0.2:5070".parse().unwrap()], ..Overrides::default() });
        assert_eq!(c.join, vec!["10.0.0.2:5070".parse().unwrap()]);
    }

    #[test]
    fn errors_are_one_line_with_a_position() {
        let e = parse("listen = \"127.0.0.1:6000\"\nlisen = 1\n").unwrap_err().to_string();
        assert!(e.contains("line 2, column 1") && e.contains("unknown field `lisen`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse("listen = \"nonsense\"").unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
        let e = parse("listen = [").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn validation() {
        let mut c = Config { max_datagram_size: 0, ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("max_datagram_size"));
        c.max_datagram_size = 70_000;
        assert!(c.validate().is_err());
        c.max_datagram_size = 1300;
        c.domain = String::new();
        assert!(c.validate().unwrap_err().to_string().contains("domain"));
    }
}
