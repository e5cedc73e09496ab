//! Sending one mail through a plain SMTP relay (RFC 5321), for `ca serve --smtp-relay`.
//!
//! The exchange is the smallest one a relay accepts: the 220 greeting, `EHLO` (`HELO` if the
//! relay refuses EHLO with 5xx), `MAIL FROM`, `RCPT TO`, `DATA` with CRLF line endings and
//! dot-stuffing, the final `.`, `QUIT`. No TLS and no AUTH: point it at a relay that accepts
//! mail from this host without them, such as the host's own MTA on 127.0.0.1:25.
//! The whole exchange is bounded by [`SMTP_TIMEOUT`].

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::enrollment::desk::Mail;

/// How long one whole exchange with the relay may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest reply line read from the relay (RFC 5321 §4.5.3.1.5 says 512 octets).
const MAX_LINE: usize = 4096;

/// Where and as whom verification mails are sent.
#[derive(Debug, Clone)]
pub struct SmtpRelay {
    /// `HOST:PORT`, resolved at each send.
    pub addr: String,
    /// The envelope sender and `From:` address.
    pub from: String,
}

/// Why a mail could not be handed to the relay.
// Each variant's `#[error]` message says what it means, naming its fields.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot connect to the SMTP relay {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("SMTP relay I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the SMTP relay answered {command} with: {reply}")]
    Refused { command: &'static str, reply: String },
    #[error("the SMTP relay sent a malformed reply: {0:?}")]
    Malformed(String),
    #[error("the SMTP exchange took longer than {} s", SMTP_TIMEOUT.as_secs())]
    Timeout,
    #[error("{0:?} is not a plain mail address")]
    BadAddress(String),
}

/// An address that can go between `<` and `>` without breaking the command line.
pub fn check_address(addr: &str) -> Result<(), SmtpError> {
    let plain = !addr.is_empty() && addr.contains('@') && !addr.chars().any(|c| c.is_control() || "<> ".contains(c));
    if plain {
        Ok(())
    } else {
        Err(SmtpError::BadAddress(addr.to_owned()))
    }
}

/// Sends `mail` through `relay`.
pub async fn send(relay: &SmtpRelay, mail: &Mail) -> Result<(), SmtpError> {
    check_address(&relay.from)?;
    check_address(&mail.to)?;
    tokio::time::timeout(SMTP_TIMEOUT, exchange(relay, mail)).await.map_err(|_| SmtpError::Timeout)?
}

async fn exchange(relay: &SmtpRelay, mail: &Mail) -> Result<(), SmtpError> {
    let tcp = TcpStream::connect(relay.addr.as_str())
        .await
        .map_err(|source| SmtpError::Connect { addr: relay.addr.clone(), source })?;
    let me = match tcp.local_addr()? {
        std::net::SocketAddr::V4(a) => format!("[{}]", a.ip()),
        std::net::SocketAddr::V6(a) => format!("[IPv6:{}]", a.ip()),
    };
    let mut smtp = Session { io: BufReader::new(tcp) };
    smtp.expect("the greeting", 220).await?;
    smtp.send(&format!("EHLO {me}")).await?;
    let (code, reply) = smtp.reply().await?;
    if (500..600).contains(&code) {
        smtp.command("HELO", &format!("HELO {me}"), 250).await?;
    } else if code != 250 {
        return Err(SmtpError::Refused { command: "EHLO", reply });
    }
    smtp.command("MAIL FROM", &format!("MAIL FROM:<{}>", relay.from), 250).await?;
    smtp.command("RCPT TO", &format!("RCPT TO:<{}>", mail.to), 250).await?;
    smtp.command("DATA", "DATA", 354).await?;
    smtp.io.get_mut().write_all(message(&relay.from, mail).as_bytes()).await?;
    smtp.expect("the message", 250).await?;
    // The mail is accepted; a relay that mishandles QUIT changes nothing.
    let _ = smtp.command("QUIT", "QUIT", 221).await;
    Ok(())
}

/// The DATA payload: headers and body with CRLF line endings, lines starting with `.`
/// dot-stuffed, ended by `CRLF.CRLF`.
pub fn message(from: &str, mail: &Mail) -> String {
    let text = format!(
        "From: {from}\nTo: {}\nSubject: {}\nContent-Type: text/plain; charset=utf-8\n\n{}",
        mail.to, mail.subject, mail.body
    );
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.replace("\r\n", "\n").trim_end_matches('\n').split('\n') {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

struct Session {
    io: BufReader<TcpStream>,
}

impl Session {
    async fn send(&mut self, line: &str) -> Result<(), SmtpError> {
        self.io.get_mut().write_all(format!("{line}\r\n").as_bytes()).await?;
        Ok(())
    }

    async fn command(&mut self, name: &'static str, line: &str, want: u16) -> Result<(), SmtpError> {
        self.send(line).await?;
        self.expect(name, want).await
    }

    async fn expect(&mut self, name: &'static str, want: u16) -> Result<(), SmtpError> {
        let (code, reply) = self.reply().await?;
        if code == want {
            Ok(())
        } else {
            Err(SmtpError::Refused { command: name, reply })
        }
    }

    /// One reply, possibly multi-line (`250-...` continued up to `250 ...`): its code and text.
    async fn reply(&mut self) -> Result<(u16, String), SmtpError> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = (&mut self.io).take(MAX_LINE as u64).read_line(&mut line).await?;
            if n == 0 {
                return Err(SmtpError::Malformed(format!("{all}(connection closed)")));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            all.push_str(line);
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            match (code, line.as_bytes().get(3)) {
                (Some(_), Some(b'-')) => all.push_str(" | "),
                (Some(code), None | Some(b' ')) => return Ok((code, all)),
                _ => return Err(SmtpError::Malformed(all)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_has_crlf_and_dot_stuffing() {
        let mail = Mail { to: "a@b.test".into(), subject: "S".into(), body: "one\n.two\n..\nend\n".into() };
        let m = message("ca@b.test", &mail);
        assert_eq!(
            m,
            "From: ca@b.test\r\nTo: a@b.test\r\nSubject: S\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             one\r\n..two\r\n...\r\nend\r\n.\r\n"
        );
    }

    #[test]
    fn addresses_that_would_break_a_command_are_refused() {
        assert!(check_address("ca@example.com").is_ok());
        for bad in ["", "nobody", "a@b>\r\nRCPT TO:<c@d", "a b@c", "<a@b>"] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
    }
}
