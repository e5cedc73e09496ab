//! The recipient's side: our mailbox is listed when a phone of our user registers and every
//! `recheck_interval`; each message is opened and handed to every phone of the user that has
//! not had it (the delivery log decides), as an ordinary MESSAGE from the sender's verified
//! AoR with the original display name, Date, Content-Type and body. Once no delivery of a
//! message is in flight and at least one phone answered 2xx, the message is deleted with a
//! tombstone signed as our user. A phone that fails is tried again at the next listing, so a
//! message is never deleted before some phone has it.

use std::collections::BTreeSet;
use std::time::Instant;

use rand::Rng;
use tracing::{debug, info};

use super::letter::Letter;
use super::send::{header_safe, media_type_or_text};
use super::{Delivered, Device, Mailbox, Output, Purpose, PutResult, Ticket, Waiting};
use crate::identity::Aor;
use crate::sip::header::NameAddr;
use crate::sip::transaction::ClientTxId;
use crate::sip::{Header, HeaderName, Message, Method, Uri};
use crate::store::mailbox::{parse_message_key, MessageId};
use crate::store::{Record, RecordKind, Unsigned};

/// A message of our mailbox, opened.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) id: MessageId,
    /// Its resource name.
    key: String,
    sender: Aor,
    letter: Letter,
    seq: u64,
    expires_at: u64,
}

impl Held {
    pub(super) fn summary(&self) -> Waiting {
        Waiting {
            id: self.id.to_hex(),
            from: self.sender.to_string(),
            display: self.letter.display.clone(),
            date: self.letter.date.clone(),
            content_type: self.letter.content_type.clone(),
            body: String::from_utf8_lossy(&self.letter.body).into_owned(),
            expires_at: self.expires_at,
        }
    }
}

impl Mailbox {
    /// Our user's phones now (from the registrar). A phone not seen before has our mailbox
    /// listed at once.
    pub fn set_devices(&mut self, now: Instant, devices: Vec<Device>) {
        let new = devices.iter().any(|d| !self.devices.iter().any(|o| o.id == d.id));
        self.devices = devices;
        if new {
            self.list(now);
        }
    }

    /// Whether storage can reach the ring now (joined, or a client bound at its edge). Coming
    /// onto it lists our mailbox at once: what waited while we were away is delivered without
    /// waiting for the periodic listing.
    pub fn set_on_ring(&mut self, now: Instant, on_ring: bool) {
        let arrived = on_ring && !self.on_ring;
        self.on_ring = on_ring;
        if arrived {
            self.list(now);
        }
    }

    /// Lists our mailbox now (or right after the listing in flight).
    pub(super) fn list(&mut self, now: Instant) {
        if self.listing.is_some() {
            self.list_again = true;
            return;
        }
        let ticket = self.ticket(Purpose::List);
        self.listing = Some(ticket);
        self.next_listing = now + self.config.recheck_interval;
        self.out.push_back(Output::List { ticket, aor: self.identity.aor.to_string() });
    }

    /// Our mailbox as its places listed it (each record verified by the peer; a tombstone in
    /// place of the message it deletes).
    pub fn listed(&mut self, now: Instant, unix_now: u64, ticket: Ticket, records: Vec<Record>) {
        if self.tickets.remove(&ticket).is_none() {
            return;
        }
        self.listing = None;
        self.failed.clear();
        let mut seen = BTreeSet::new();
        for record in records {
            let Some((recipient, id)) = parse_message_key(&record.key) else { continue };
            if recipient != self.identity.aor || record.kind != RecordKind::OfflineMessage {
                continue;
            }
            seen.insert(id);
            if record.is_tombstone() {
                self.waiting.remove(&id);
                continue;
            }
            if self.waiting.contains_key(&id) || self.unreadable.contains(&id) {
                continue;
            }
            match Letter::open(&self.identity.encryption, &record.key, &record.owner, &record.payload) {
                Ok(letter) => {
                    let held = Held {
                        id,
                        key: record.key.clone(),
                        sender: record.owner.clone(),
                        letter,
                        seq: record.seq,
                        expires_at: record.expires_at,
                    };
                    self.waiting.insert(id, held);
                }
                Err(e) => {
                    debug!(%id, from = %record.owner, error = %e, "a message in our mailbox does not open");
                    self.unreadable.insert(id);
                    self.counters.unreadable += 1;
                }
            }
        }
        // Gone from every place (deleted or expired): forgotten, unless a phone has it now.
        let busy: BTreeSet<MessageId> = self.deliveries.values().chain(&self.pending_to).map(|(id, _)| *id).collect();
        self.waiting.retain(|id, _| seen.contains(id) || busy.contains(id));
        self.unreadable.retain(|id| seen.contains(id));
        if !self.waiting.is_empty() {
            info!(messages = self.waiting.len(), phones = self.devices.len(), "offline messages in our mailbox");
        }
        self.dispatch(unix_now, true);
        if std::mem::take(&mut self.list_again) {
            self.list(now);
        }
    }

    /// Hands each phone the oldest waiting message it has not had, one at a time per phone (in
    /// the order they were sent, and never a burst a phone could be slow to answer: a phone
    /// that answers a retransmission as a new MESSAGE would show it twice), and deletes what
    /// some phone has and none is still receiving.
    fn dispatch(&mut self, unix_now: u64, listing: bool) {
        let mut order: Vec<(u64, MessageId)> = self.waiting.values().map(|h| (h.seq, h.id)).collect();
        order.sort();
        let devices = self.devices.clone();
        for device in devices {
            let busy = self.deliveries.values().chain(&self.pending_to).any(|(_, d)| *d == device.id);
            if busy {
                continue;
            }
            let mut next = None;
            for (_, id) in &order {
                if self.log.reached(id, &device.id) {
                    // A listing that still shows a message this phone has.
                    self.counters.duplicates_suppressed += u64::from(listing);
                } else if next.is_none() && !self.failed.contains(&(*id, device.id.clone())) {
                    next = Some(*id);
                }
            }
            let Some(id) = next else { continue };
            let Some(held) = self.waiting.get(&id).cloned() else { continue };
            let request = self.delivery_request(&held, &device, unix_now);
            self.pending_to.push((id, device.id.clone()));
            self.out.push_back(Output::Deliver { id, device, request: Box::new(request) });
        }
        for (_, id) in order {
            let in_flight = self.deliveries.values().any(|(m, _)| *m == id);
            let pending = self.pending_to.iter().any(|(m, _)| *m == id);
            if !in_flight && !pending && self.log.reached_any(&id) && !self.deleting.contains(&id) {
                self.delete(id);
            }
        }
    }

    /// The MESSAGE that hands `held` to `device` (RFC 3428 §4), without its Via.
    fn delivery_request(&mut self, held: &Held, device: &Device, unix_now: u64) -> Message {
        let mut req = Message::request(Method::Message, device.uri.clone());
        let sender_uri = Uri::parse(held.sender.as_str()).unwrap_or_else(|| device.uri.clone());
        let mut from = NameAddr::new(sender_uri);
        let display = header_safe(held.letter.display.clone());
        if !display.is_empty() {
            from.display = Some(display);
        }
        from.set_param("tag", Some(format!("{:016x}", self.ids.random::<u64>())));
        let to = Uri::parse(self.identity.aor.as_str()).unwrap_or_else(|| device.uri.clone());
        let call_id = format!("{:016x}{:016x}@p2psip-mailbox", self.ids.random::<u64>(), self.ids.random::<u64>());
        let date = match crate::identity::caller::parse_http_date(&held.letter.date) {
            Some(_) => held.letter.date.clone(),
            None => crate::identity::caller::http_date(unix_now),
        };
        let h = &mut req.headers;
        h.push(Header::new(HeaderName::MaxForwards, 70));
        h.push(Header::new(HeaderName::From, from));
        h.push(Header::new(HeaderName::To, NameAddr::new(to)));
        h.push(Header::new(HeaderName::CallId, call_id));
        h.push(Header::new(HeaderName::CSeq, "1 MESSAGE"));
        h.push(Header::new(HeaderName::Date, date));
        let body = bytes::Bytes::from(held.letter.body.clone());
        req.set_body(body, Some(&media_type_or_text(&held.letter.content_type)));
        req
    }

    /// The peer sent the delivery of `id` to `device` as client transaction `tx`.
    pub fn delivery_sent(&mut self, tx: ClientTxId, id: MessageId, device: String) {
        self.pending_to.retain(|(m, d)| !(*m == id && *d == device));
        self.deliveries.insert(tx, (id, device));
    }

    /// A final answer from a phone to one of our deliveries.
    pub fn delivery_answered(&mut self, unix_now: u64, tx: ClientTxId, status: u16) {
        if status < 200 {
            return;
        }
        let Some((id, device)) = self.deliveries.remove(&tx) else { return };
        if !(200..300).contains(&status) {
            debug!(%id, %device, status, "a phone refused an offline message; tried again at the next listing");
            self.failed.insert((id, device));
            self.dispatch(unix_now, false);
            return;
        }
        if let Some(held) = self.waiting.get(&id) {
            let summary = held.summary();
            let entry = Delivered {
                id: summary.id,
                device,
                from: summary.from,
                display: summary.display,
                date: summary.date,
                body: summary.body,
                delivered_at: unix_now,
                expires_at: summary.expires_at,
            };
            info!(%id, device = %entry.device, from = %entry.from, "offline message delivered");
            self.log.add(entry.clone());
            self.counters.delivered = self.log.messages() as u64;
            self.out.push_back(Output::Delivered(entry));
        }
        self.dispatch(unix_now, false);
    }

    /// A delivery's transaction timed out or ended without a final answer.
    pub fn delivery_failed(&mut self, unix_now: u64, tx: ClientTxId) {
        if let Some((id, device)) = self.deliveries.remove(&tx) {
            self.failed.insert((id, device));
            self.dispatch(unix_now, false);
        }
    }

    /// Stores the tombstone of message `id`: signed by us, as long-lived as the message.
    fn delete(&mut self, id: MessageId) {
        let Some(held) = self.waiting.get(&id) else { return };
        let unsigned = Unsigned {
            kind: RecordKind::OfflineMessage,
            key: held.key.clone(),
            owner: self.identity.aor.clone(),
            seq: held.seq.saturating_add(1),
            expires_at: held.expires_at,
            payload: Vec::new(),
        };
        let Some(record) = self.sign(unsigned) else { return };
        self.deleting.insert(id);
        let ticket = self.ticket(Purpose::Delete(id));
        self.out.push_back(Output::Put { ticket, record });
    }

    /// A tombstone's put ended: the message is gone once a place took it (the others' copies
    /// are deleted again at the next listing that shows them).
    pub(super) fn deleted(&mut self, id: MessageId, result: PutResult) {
        self.deleting.remove(&id);
        if result.stored > 0 {
            self.waiting.remove(&id);
            self.counters.deleted += 1;
        }
    }
}
