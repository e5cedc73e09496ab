//! Fuzz target bodies for what presence reads from phones and other nodes, shared by `fuzz/`
//! and the corpus replay test.

use bytes::Bytes;

use super::PresenceState;
use crate::sip::dialog::{Dialog, DialogId};

/// `presence_body`: the input read as a PIDF document (what reads must write back the same) and
/// as a SIP request that may set up a subscription dialog; nothing panics.
pub fn fuzz_presence(data: &[u8]) {
    if let Ok(state) = PresenceState::parse(data) {
        let written = state.to_pidf("sip:fuzz@p2p.test");
        let again = PresenceState::parse(written.as_bytes()).expect("what we write reads back");
        assert_eq!(again.open.unwrap_or(true), state.open.unwrap_or(true), "basic survives");
    }
    if let Ok(msg) = crate::sip::parse(Bytes::copy_from_slice(data)) {
        let _ = super::is_presence(&msg);
        let _ = DialogId::of_request(&msg);
        if let Some(mut dialog) = Dialog::as_uas(&msg, "fuzz") {
            let _ = dialog.accept_remote_seq(u32::MAX);
            let contact = crate::sip::header::NameAddr::new(dialog.remote_uri.clone());
            let _ = dialog.request(crate::sip::Method::Notify, &contact).encode();
        }
        if let Ok(mut msg2) = crate::sip::parse(Bytes::copy_from_slice(data)) {
            msg2.headers.push(crate::sip::Header::new(crate::sip::HeaderName::To, "<sip:x@y>;tag=a"));
            let _ = Dialog::as_uac(&msg, &msg2);
        }
    }
}
