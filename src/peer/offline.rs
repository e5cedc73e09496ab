//! The peer's side of the mailbox (`crate::mailbox`): it routes between the proxy (MESSAGEs
//! that found nobody, answers to them, our user's phones and what we deliver to them),
//! storage (key fetches, puts, listings) and the mailbox service. No mailbox logic lives here.

use std::time::Instant;

use super::replication::Ring;
use super::replication::{Place, StorageEvent};
use super::Peer;
use super::{PeerEvent, StorageOpId};
use crate::mailbox::{Device, Mailbox, MailboxConfig, MailboxIdentity, Output, PutResult, Ticket};
use crate::sip::transaction::ClientTxId;
use crate::sip::{Header, HeaderName, Message};
use crate::store::RecordKind;
use crate::transport::Listener;

impl Peer {
    /// Turns store-and-forward on for our enrolled user (storage must be on):
    /// `delivered` is the delivery log kept in the data directory. Our encryption key is
    /// published with our other records from now on.
    pub fn enable_mailbox(
        &mut self,
        now: Instant,
        identity: MailboxIdentity,
        config: MailboxConfig,
        delivered: Vec<crate::mailbox::Delivered>,
    ) {
        let public = identity.encryption.public_bytes();
        let seed = self.config.seed ^ 0x6d61_696c_626f_7821;
        self.mailbox = Some(Mailbox::new(identity, config, delivered, seed, now));
        self.with_storage(now, |s, ring| s.set_encryption_key(now, ring, public));
        self.proxy.set_offline_delivery(true);
    }

    /// The mailbox, when on.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        self.mailbox.as_ref()
    }

    /// `"mailbox"` in `/status`: `None` with storage off.
    pub fn mailbox_status(&self) -> Option<crate::mailbox::MailboxStatus> {
        let storage = self.storage.as_ref()?;
        let ours = self.mailbox.as_ref().map(|m| m.aor().clone());
        let held_for_others = storage
            .held_records()
            .filter(|r| r.kind == RecordKind::OfflineMessage && !r.is_tombstone())
            .filter(|r| {
                let recipient = crate::store::mailbox::parse_message_key(&r.key).map(|(aor, _)| aor);
                recipient.is_some() && recipient != ours
            })
            .count() as u64;
        let mut status = crate::mailbox::MailboxStatus { held_for_others, ..Default::default() };
        if let Some(m) = &self.mailbox {
            status.waiting_for_me = m.waiting().len() as u64;
            status.delivered = m.counters().delivered;
            status.counters = m.counters().clone();
        }
        Some(status)
    }

    /// What waits for our user and what was delivered (`GET /messages`).
    pub fn messages(&self) -> crate::mailbox::Messages {
        match &self.mailbox {
            Some(m) => crate::mailbox::Messages {
                aor: Some(m.aor().to_string()),
                waiting: m.waiting(),
                delivered: m.delivered(),
            },
            None => crate::mailbox::Messages::default(),
        }
    }

    /// Whether a storage operation is the mailbox's; if so its report goes there
    /// (`run_mailbox` hands it on, outside storage's own loop).
    pub(super) fn mailbox_takes(&mut self, event: &StorageEvent) -> bool {
        let op = match event {
            StorageEvent::Stored { op, .. } | StorageEvent::Fetched { op, .. } | StorageEvent::Listed { op, .. } => *op,
        };
        match self.mailbox_ops.remove(&op) {
            Some(ticket) => {
                self.mailbox_reports.push_back((ticket, event.clone()));
                true
            }
            None => false,
        }
    }

    /// Whether a client transaction is one of the mailbox's deliveries to a phone.
    pub(super) fn is_delivery(&self, tx: ClientTxId) -> bool {
        self.mailbox.as_ref().is_some_and(|m| m.owns_delivery(tx))
    }

    /// A phone's final answer to a delivery.
    pub(super) fn delivery_answered(&mut self, now: Instant, tx: ClientTxId, response: &Message) {
        let unix_now = self.unix_now(now);
        if let (Some(m), Some(status)) = (self.mailbox.as_mut(), response.status()) {
            m.delivery_answered(unix_now, tx, status);
        }
    }

    /// A delivery's transaction ended without a final answer.
    pub(super) fn delivery_failed(&mut self, now: Instant, tx: ClientTxId) {
        let unix_now = self.unix_now(now);
        if let Some(m) = self.mailbox.as_mut() {
            m.delivery_failed(unix_now, tx);
        }
    }

    /// The mailbox's timer.
    pub(super) fn mailbox_timeout(&mut self, now: Instant) {
        if let Some(m) = self.mailbox.as_mut() {
            m.handle_timeout(now);
        }
    }

    /// Everything between the mailbox and the rest: our user's phones, MESSAGEs the proxy
    /// handed over, storage's reports, then what the mailbox asks, until none has more.
    pub(super) fn run_mailbox(&mut self, now: Instant) {
        if self.mailbox.is_none() {
            return;
        }
        let unix_now = self.unix_now(now);
        loop {
            let mut busy = false;
            while let Some(offline) = self.proxy.poll_offline() {
                busy = true;
                let recipient = crate::identity::Aor::parse(&offline.aor);
                match (self.mailbox.as_mut(), recipient) {
                    (Some(m), Ok(aor)) => m.send(offline.sid, aor, &offline.request, unix_now),
                    _ => self.proxy.offline_answer(now, &mut self.transactions, offline.sid, 404, "Not Found"),
                }
            }
            while let Some((ticket, event)) = self.mailbox_reports.pop_front() {
                busy = true;
                self.mailbox_report(now, unix_now, ticket, event);
            }
            while let Some(output) = self.mailbox.as_mut().and_then(Mailbox::poll_output) {
                busy = true;
                self.mailbox_output(now, output);
            }
            if !busy {
                break;
            }
        }
    }

    /// Our user's phones, as the registrar has them (phones on the proxy listener only), and
    /// whether storage reaches the ring: read once per pass of the peer and handed to the
    /// mailbox and to presence (`proxy_overlay`), which act on changes only.
    pub(super) fn sync_our_phones(&mut self, now: Instant) {
        let Some(me) = self.aor().map(ToString::to_string) else { return };
        if self.mailbox.is_none() && self.presence.is_none() {
            return;
        }
        let devices: Vec<Device> = self
            .proxy
            .registrar()
            .lookup(&me, now)
            .into_iter()
            .filter(|b| b.flow.listener == Listener::Proxy)
            .map(|b| Device {
                id: b
                    .contact
                    .param("+sip.instance")
                    .and_then(|p| p.value.clone())
                    .unwrap_or_else(|| b.contact.uri.to_string()),
                uri: b.contact.uri.clone(),
                flow: b.flow,
            })
            .collect();
        let on_ring = self
            .storage
            .as_ref()
            .is_some_and(|s| s.may_publish(&Ring { chord: &self.overlay.chord, info: &self.overlay.info }));
        if let Some(p) = self.presence.as_mut() {
            p.set_phones_online(now, !devices.is_empty());
        }
        if let Some(m) = self.mailbox.as_mut() {
            m.set_on_ring(now, on_ring);
            m.set_devices(now, devices);
        }
    }

    fn mailbox_report(&mut self, now: Instant, unix_now: u64, ticket: Ticket, event: StorageEvent) {
        let Some(m) = self.mailbox.as_mut() else { return };
        match event {
            StorageEvent::Fetched { newest, places, .. } => {
                let nobody_has_it = !places.is_empty() && places.iter().all(said_no_record);
                m.key_fetched(ticket, unix_now, newest, nobody_has_it);
            }
            StorageEvent::Stored { places, .. } => {
                let result = PutResult {
                    stored: places.iter().filter(|p| p.valid).count(),
                    failures: places.iter().filter_map(|p| p.error.clone()).collect(),
                };
                m.put_done(ticket, result);
            }
            StorageEvent::Listed { records, .. } => m.listed(now, unix_now, ticket, records),
        }
    }

    fn mailbox_output(&mut self, now: Instant, output: Output) {
        match output {
            Output::FetchKey { ticket, aor } => {
                self.storage_op(now, ticket, |s, ring| s.fetch(now, ring, RecordKind::EncryptionKey, &aor));
            }
            Output::Put { ticket, record } => {
                self.storage_op(now, ticket, |s, ring| s.put(now, ring, record));
            }
            Output::List { ticket, aor } => {
                self.storage_op(now, ticket, |s, ring| s.list_mailbox(now, ring, &aor));
            }
            Output::Answer { sid, status, reason } => {
                self.proxy.offline_answer(now, &mut self.transactions, sid, status, &reason);
                self.drain_transactions_only();
            }
            Output::Deliver { id, device, request } => {
                let mut request = *request;
                let via = self.proxy.phone_via(device.flow.transport);
                request.headers.push_front_of(Header::new(HeaderName::Via, via));
                let tx = self.transactions.send_request(now, request, device.flow, device.flow.transport.is_reliable());
                self.counters.client_transactions += 1;
                if let Some(m) = self.mailbox.as_mut() {
                    m.delivery_sent(tx, id, device.id);
                }
                self.drain_transactions_only();
            }
            Output::Delivered(entry) => self.events.push_back(PeerEvent::Delivered(entry)),
        }
    }

    /// Starts a storage operation for the mailbox's `ticket`, then lets storage run: its
    /// report may come at once (every place is us), and must find the ticket.
    fn storage_op(
        &mut self,
        now: Instant,
        ticket: Ticket,
        f: impl FnOnce(&mut super::Replication, Ring<'_>) -> StorageOpId,
    ) {
        let Some(storage) = self.storage.as_mut() else {
            // No storage: nothing can be stored or found.
            if let Some(m) = self.mailbox.as_mut() {
                m.storage_unavailable(ticket);
            }
            return;
        };
        let ring = Ring { chord: &self.overlay.chord, info: &self.overlay.info };
        let op = f(storage, ring);
        self.mailbox_ops.insert(op, ticket);
        self.run_storage(now);
    }
}

/// A place that answered it holds no such record (rather than failing to answer).
fn said_no_record(place: &Place) -> bool {
    place.error.as_deref() == Some("no record")
}
