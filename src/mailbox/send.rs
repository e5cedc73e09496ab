//! The sender's side: a MESSAGE from one of our phones to a user with no live registration is
//! sealed to the user's encryption key, signed as our user and stored in the user's mailbox.
//! The phone hears `202 Accepted` (RFC 3428 §7: accepted, delivered later) once one place
//! holds a copy; `404` when the recipient has no encryption key in the overlay (not enrolled,
//! or gone longer than a key lives); otherwise the places' refusal.

use tracing::debug;

use super::letter::Letter;
use super::{Mailbox, Output, Purpose, PutResult, Ticket};
use crate::identity::caller::{http_date, parse_http_date};
use crate::identity::Aor;
use crate::sip::header::MediaType;
use crate::sip::transaction::ServerTxId;
use crate::sip::{HeaderName, Message};
use crate::store::mailbox::{message_key, MailboxRefusal, MessageId, MAX_BODY_BYTES};
use crate::store::{EncryptionKey, Record, RecordKind, Unsigned};

/// One MESSAGE on its way to a mailbox.
pub(super) struct Job {
    sid: ServerTxId,
    recipient: Aor,
    letter: Letter,
}

impl Mailbox {
    /// A MESSAGE from one of our phones (server transaction `sid`) to `recipient`, who has no
    /// live registration: it goes to the recipient's mailbox, and the phone is answered.
    pub fn send(&mut self, sid: ServerTxId, recipient: Aor, request: &Message, unix_now: u64) {
        if request.body.len() > MAX_BODY_BYTES {
            let reason = format!("Message Too Large (at most {MAX_BODY_BYTES} bytes wait for an offline user)");
            self.answer(sid, 413, reason);
            return;
        }
        let display = request.from().ok().and_then(|f| f.display.clone()).map(header_safe).unwrap_or_default();
        // The original Date when the phone sent a readable one, else the time it reached us.
        let date = request
            .headers
            .get(&HeaderName::Date)
            .and_then(|h| h.value_str())
            .filter(|d| parse_http_date(d).is_some())
            .map(str::to_owned)
            .unwrap_or_else(|| http_date(unix_now));
        let content_type =
            request.content_type().ok().flatten().map(|t| t.to_string()).unwrap_or_else(|| "text/plain".to_owned());
        let letter = Letter { display, date, content_type, body: request.body.to_vec() };
        let job = self.next_job;
        self.next_job += 1;
        let ticket = self.ticket(Purpose::Send(job));
        self.out.push_back(Output::FetchKey { ticket, aor: recipient.to_string() });
        self.sends.insert(job, Job { sid, recipient, letter });
    }

    /// The recipient's encryption-key record, verified, or `None`; `nobody_has_it` when every
    /// place answered that it holds none (rather than failing to answer).
    pub fn key_fetched(&mut self, ticket: Ticket, unix_now: u64, key: Option<Record>, nobody_has_it: bool) {
        let Some(Purpose::Send(job)) = self.tickets.remove(&ticket) else { return };
        let Some(j) = self.sends.get(&job) else { return };
        let sid = j.sid;
        let public = key
            .filter(|r| r.kind == RecordKind::EncryptionKey && r.owner == j.recipient)
            .and_then(|r| EncryptionKey::from_payload(&r.payload))
            .filter(|k| k.suite == crate::identity::hpke::SUITE);
        let Some(public) = public else {
            self.sends.remove(&job);
            let (status, reason) = if nobody_has_it {
                (404, "Not Found (no such user in the overlay)")
            } else {
                (480, "Temporarily Unavailable (the user's key could not be fetched)")
            };
            self.answer(sid, status, reason.to_owned());
            return;
        };
        match self.seal(job, &public.public, unix_now) {
            Some(record) => {
                let ticket = self.ticket(Purpose::Send(job));
                self.out.push_back(Output::Put { ticket, record });
            }
            None => {
                self.sends.remove(&job);
                self.answer(sid, 500, "Server Internal Error (could not seal the message)".to_owned());
            }
        }
    }

    /// The sealed, signed record of `job`'s message.
    fn seal(&mut self, job: u64, recipient_key: &[u8], unix_now: u64) -> Option<Record> {
        let id = MessageId(self.random::<16>()?);
        let seed = self.random::<32>()?;
        let j = self.sends.get(&job)?;
        let key = message_key(&j.recipient, &id);
        let owner = self.identity.aor.clone();
        let payload = j.letter.seal(recipient_key, &key, &owner, seed).ok()?;
        let expires_at = (unix_now + self.config.lifetime_secs).min(self.identity.not_after);
        // Milliseconds' worth of room per second: the messages of one second keep the order
        // they were sent in (deliveries follow it).
        let seq = unix_now.saturating_mul(1000) + job % 1000;
        let unsigned = Unsigned { kind: RecordKind::OfflineMessage, key, owner, seq, expires_at, payload };
        self.sign(unsigned)
    }

    /// A put the mailbox asked for ended.
    pub fn put_done(&mut self, ticket: Ticket, result: PutResult) {
        match self.tickets.remove(&ticket) {
            Some(Purpose::Send(job)) => self.stored(job, result),
            Some(Purpose::Delete(id)) => self.deleted(id, result),
            Some(Purpose::List) | None => {}
        }
    }

    fn stored(&mut self, job: u64, result: PutResult) {
        let Some(j) = self.sends.remove(&job) else { return };
        if result.stored > 0 {
            self.counters.sent_stored += 1;
            debug!(to = %j.recipient, places = result.stored, "offline message stored");
            self.answer(j.sid, 202, "Accepted (stored for the offline user)".to_owned());
            return;
        }
        self.counters.sent_refused += 1;
        let refusal = result.failures.iter().find_map(|f| {
            // A place's failure reads "<status> <reason phrase>".
            f.split_once(' ').and_then(|(_, reason)| MailboxRefusal::from_reason(reason))
        });
        let (status, reason) = match refusal {
            Some(MailboxRefusal::NotEnrolled) => (404, "Not Found (the user is not enrolled)".to_owned()),
            Some(MailboxRefusal::TooLarge) => (413, "Message Too Large".to_owned()),
            Some(r) => (480, format!("Temporarily Unavailable ({})", r.reason_phrase().to_lowercase())),
            // Another refusal ("403 Owner Store Rate Exceeded"), in its own words.
            None => match result.failures.iter().find_map(|f| refusal_phrase(f)) {
                Some(phrase) => (480, format!("Temporarily Unavailable ({})", phrase.to_lowercase())),
                None => (503, "Service Unavailable (no place of the mailbox could be reached)".to_owned()),
            },
        };
        debug!(to = %j.recipient, ?result, status, "offline message not stored");
        self.answer(j.sid, status, reason);
    }

    fn answer(&mut self, sid: ServerTxId, status: u16, reason: String) {
        self.out.push_back(Output::Answer { sid, status, reason });
    }
}

/// The reason phrase of a place's failure when it was a refusal ("403 Mailbox Full"), not a
/// failure to answer.
fn refusal_phrase(failure: &str) -> Option<&str> {
    let (code, phrase) = failure.split_once(' ')?;
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit())).then_some(phrase)
}

/// A display name fit to go back into a header: no control characters, at most 128 bytes.
pub(super) fn header_safe(text: String) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    let mut end = clean.len().min(128);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    clean[..end].to_owned()
}

/// A media type fit for the phone: the sealed one if it reads as one, else `text/plain`.
pub(super) fn media_type_or_text(text: &str) -> MediaType {
    MediaType::parse(text.as_bytes()).unwrap_or_else(|| MediaType::new("text", "plain"))
}
