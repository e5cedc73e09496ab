//! The anchor's signalling hooks (the rules are `super`'s module doc): what it does with each
//! message crossing between our phone and the overlay, the calls it makes from them, and the
//! proofs it checks.

use std::time::Instant;

use rand::Rng;
use tracing::{debug, info};

use super::{aor_of, learn, rewrite, Anchor};
use crate::media::body::{self, sdp_of, split_body, strip_frag, Body};
use crate::media::call::{Call, CallCounters, CallState, Role};
use crate::media::frag::Frag;
use crate::media::ice::{CandidateKind, LocalCandidate};
use crate::media::keys::{self, CallNames, KeyShare, Share};
use crate::media::pool::Leg;
use crate::sip::validate::Rejection;
use crate::sip::{Message, Method};

impl Anchor {
    /// A message from our phone on its way to another node (the proxy's copy for one branch,
    /// or a response going upstream).
    pub fn toward_overlay(&mut self, now: Instant, msg: &mut Message) {
        self.phone_sent(now, msg);
        self.rewake();
    }

    /// A message from another node on its way to our phone. Refused (the request gets the
    /// rejection) when its ICE part does not prove the caller or no call can be anchored.
    pub fn toward_phone(&mut self, now: Instant, msg: &mut Message) -> Result<(), Rejection> {
        let r = self.for_phone(now, msg);
        self.rewake();
        r
    }

    fn phone_sent(&mut self, now: Instant, msg: &mut Message) {
        let Ok(call_id) = msg.call_id().map(str::to_owned) else { return };
        let initial = msg.to().ok().is_some_and(|t| t.tag().is_none());
        if let Some(method) = msg.method().cloned() {
            if method == Method::Invite && initial && !self.calls.contains_key(&call_id) {
                self.start_caller(now, &call_id, msg);
            }
            let Some(call) = self.calls.get_mut(&call_id) else { return };
            let body = split_body(msg);
            if let Some(sdp) = sdp_of(&body) {
                learn(call, &mut self.pool, &mut self.owners, &sdp);
            }
            if method == Method::Invite && initial {
                let frag = call.frag.clone();
                self.attach_frag(msg, &body, frag);
            }
            if matches!(method, Method::Bye | Method::Cancel) {
                self.end(now, &call_id, "hung up");
            }
            self.refill();
            return;
        }
        let (Some(status), Ok(cseq)) = (msg.status(), msg.cseq()) else { return };
        let Some(call) = self.calls.get_mut(&call_id) else { return };
        let body = split_body(msg);
        if (180..300).contains(&status) {
            if let Some(sdp) = sdp_of(&body) {
                learn(call, &mut self.pool, &mut self.owners, &sdp);
            }
            if cseq.method == Method::Invite && call.role == Role::Callee {
                let frag = call.frag.clone();
                self.attach_frag(msg, &body, frag);
            }
        }
        self.after_response(now, &call_id, &cseq.method, status);
        self.refill();
    }

    fn for_phone(&mut self, now: Instant, msg: &mut Message) -> Result<(), Rejection> {
        let Ok(call_id) = msg.call_id().map(str::to_owned) else { return Ok(()) };
        let initial = msg.to().ok().is_some_and(|t| t.tag().is_none());
        let body = split_body(msg);
        if let Some(method) = msg.method().cloned() {
            if method == Method::Invite && initial && !self.calls.contains_key(&call_id) {
                if let Some(frag) = &body.frag {
                    self.start_callee(now, &call_id, msg, frag)?;
                }
            }
            strip_frag(msg, &body);
            if let Some(call) = self.calls.get_mut(&call_id) {
                rewrite(call, &mut self.pool, &mut self.owners, self.config.phone_ip, msg, &body);
            }
            if matches!(method, Method::Bye | Method::Cancel) {
                self.end(now, &call_id, "hung up");
            }
            self.refill();
            return Ok(());
        }
        let (Some(status), Ok(cseq)) = (msg.status(), msg.cseq()) else { return Ok(()) };
        strip_frag(msg, &body);
        if let Some(frag) = &body.frag {
            if cseq.method == Method::Invite && (180..300).contains(&status) {
                self.answer_arrived(now, &call_id, frag);
            }
        }
        if let Some(call) = self.calls.get_mut(&call_id) {
            if cseq.method == Method::Invite && (180..300).contains(&status) {
                call.answered_phone(now);
            }
            rewrite(call, &mut self.pool, &mut self.owners, self.config.phone_ip, msg, &body);
        }
        self.after_response(now, &call_id, &cseq.method, status);
        self.refill();
        Ok(())
    }

    fn after_response(&mut self, now: Instant, call_id: &str, method: &Method, status: u16) {
        let Some(call) = self.calls.get_mut(call_id) else { return };
        if *method != Method::Invite {
            return;
        }
        if (200..300).contains(&status) {
            call.answered = true;
        } else if status >= 300 && !call.answered {
            self.end(now, call_id, "not answered");
        }
    }

    fn attach_frag(&mut self, msg: &mut Message, body: &Body, frag: Vec<u8>) {
        let boundary = format!("p2psip-{:016x}", self.rng.random::<u64>());
        body::attach_frag(msg, body, frag, &boundary);
    }

    fn start_caller(&mut self, now: Instant, call_id: &str, msg: &Message) {
        let Some(id) = &self.identity else { return };
        let (Some(caller), Some(callee)) =
            (msg.from().ok().and_then(|f| aor_of(&f.uri)), msg.to().ok().and_then(|t| aor_of(&t.uri)))
        else {
            return;
        };
        if caller != id.aor.as_str() {
            debug!(%caller, "a call not from our user: not anchored");
            return;
        }
        if self.calls.len() >= self.config.max_calls {
            info!(call_id, "media: too many calls to anchor another; it goes unanchored");
            return;
        }
        let Some(leg) = self.pool.take_leg() else {
            info!(call_id, "media: no spare leg socket; the call goes unanchored");
            return;
        };
        let Some(mut call) = self.new_call(now, call_id, Role::Caller, caller, callee, leg) else { return };
        let names = CallNames { call_id, caller: &call.caller, callee: &call.callee };
        let Some(id) = &self.identity else { return };
        let Ok(signature) = keys::sign_offer(&id.key, &*id.rng, &names, &call.ours) else { return };
        call.frag = call.our_frag(signature, id.cert.clone());
        call.offer = Some(call.ours.clone());
        self.adopt(call);
    }

    fn start_callee(&mut self, now: Instant, call_id: &str, msg: &Message, frag: &[u8]) -> Result<(), Rejection> {
        let refuse = |why: String| Rejection::new(403, format!("Forbidden (media key not proven: {why})"));
        let frag = Frag::parse(frag).map_err(|e| refuse(e.to_string()))?;
        let unix = self.unix(now);
        let Some(id) = self.identity.as_mut() else {
            return Err(Rejection::new(403, "Forbidden (media key not proven: this node has no trust anchor)"));
        };
        let (Some(caller), Some(callee)) =
            (msg.from().ok().and_then(|f| aor_of(&f.uri)), msg.to().ok().and_then(|t| aor_of(&t.uri)))
        else {
            return Err(Rejection::new(400, "Bad Request (no From or To AoR)"));
        };
        let proven = id.ids.verify(&frag.cert, &[], unix).map_err(|e| refuse(e.to_string()))?;
        if proven.aor.as_str() != caller {
            self.totals.calls_refused += 1;
            return Err(refuse(format!("the certificate is for {}, not {caller}", proven.aor)));
        }
        let names = CallNames { call_id, caller: &caller, callee: &callee };
        if keys::verify_offer(&proven.public_key, &names, &frag.share, &frag.signature).is_err() {
            self.totals.calls_refused += 1;
            return Err(refuse("the signature does not verify".into()));
        }
        if self.calls.len() >= self.config.max_calls {
            return Err(Rejection::new(503, "Service Unavailable (too many calls for the media anchor)"));
        }
        let leg =
            self.pool.take_leg().ok_or_else(|| Rejection::new(503, "Service Unavailable (no media socket free)"))?;
        let mut call = self
            .new_call(now, call_id, Role::Callee, caller, callee, leg)
            .ok_or_else(|| Rejection::new(500, "Server Internal Error (media session)"))?;
        let id = self.identity.as_ref().ok_or_else(|| Rejection::new(500, "Server Internal Error"))?;
        let names = CallNames { call_id, caller: &call.caller, callee: &call.callee };
        let signature = keys::sign_answer(&id.key, &*id.rng, &names, &frag.share, &call.ours)
            .map_err(|_| Rejection::new(500, "Server Internal Error (signing)"))?;
        call.frag = call.our_frag(signature, id.cert.clone());
        call.agree(&frag.share).map_err(|e| refuse(e.to_string()))?;
        // Checks start while the phone rings (RFC 8445 §6.1.1: the INVITE's sender controls).
        call.checks_began(now);
        call.ice
            .start(now, false, &frag.share.ufrag, &frag.share.pwd, &frag.candidates)
            .map_err(|e| refuse(e.to_string()))?;
        call.offer = Some(frag.share);
        call.drive(now, &mut self.sends);
        self.adopt(call);
        Ok(())
    }

    fn answer_arrived(&mut self, now: Instant, call_id: &str, frag: &[u8]) {
        let unix = self.unix(now);
        let (Some(call), Some(id)) = (self.calls.get_mut(call_id), self.identity.as_mut()) else { return };
        if call.role != Role::Caller || call.key.is_none() || call.state != CallState::Connecting {
            return;
        }
        let checked = (|| {
            let frag = Frag::parse(frag).map_err(|e| e.to_string())?;
            let proven = id.ids.verify(&frag.cert, &[], unix).map_err(|e| e.to_string())?;
            if proven.aor.as_str() != call.callee {
                return Err(format!("the certificate is for {}, not {}", proven.aor, call.callee));
            }
            let names = CallNames { call_id, caller: &call.caller, callee: &call.callee };
            let offer = call.offer.as_ref().ok_or("no offer")?;
            keys::verify_answer(&proven.public_key, &names, offer, &frag.share, &frag.signature)
                .map_err(|e| e.to_string())?;
            Ok(frag)
        })();
        let frag = match checked {
            Ok(f) => f,
            Err(why) => {
                info!(call_id, %why, "media: the callee's node did not prove its user; no media for this call");
                call.state = CallState::Refused;
                self.totals.calls_refused += 1;
                return;
            }
        };
        if call.agree(&frag.share).is_err() {
            call.state = CallState::Refused;
            self.totals.calls_refused += 1;
            return;
        }
        call.checks_began(now);
        // Our INVITE left when the call was made; the far node's answer is here: a round trip
        // (and the far phone's first response), which the relay wait is derived from.
        call.ice.set_round_trip(now.saturating_duration_since(call.created));
        if let Err(e) = call.ice.start(now, true, &frag.share.ufrag, &frag.share.pwd, &frag.candidates) {
            debug!(call_id, error = %e, "media: ICE could not start");
        }
        call.drive(now, &mut self.sends);
    }

    fn new_call(
        &mut self,
        now: Instant,
        call_id: &str,
        role: Role,
        caller: String,
        callee: String,
        leg: Leg,
    ) -> Option<Call> {
        let id = self.identity.as_ref()?;
        let mut ice = match crate::media::ice::new_session(self.config.agent, now, self.rng.random(), &self.config.ice)
        {
            Ok(ice) => ice,
            Err(e) => {
                debug!(error = %e, "media: no ICE session");
                return None;
            }
        };
        ice.add_local(LocalCandidate { kind: CandidateKind::Host, addr: leg.addr, base: leg.addr }).ok()?;
        if let Some(srflx) = leg.srflx.filter(|s| *s != leg.addr) {
            let _ = ice.add_local(LocalCandidate { kind: CandidateKind::Srflx, addr: srflx, base: leg.addr });
        }
        if let Some(relayed) = leg.turn.as_ref().and_then(crate::media::turn::TurnLeg::relayed) {
            let _ = ice.add_local(LocalCandidate { kind: CandidateKind::Relay, addr: relayed, base: relayed });
        }
        let key = KeyShare::generate(&*id.rng).ok()?;
        let (ufrag, pwd) = ice.credentials();
        let ours = Share { ufrag, pwd, public: key.public().to_vec() };
        let started_unix = self.unix(now);
        Some(Call {
            call_id: call_id.to_owned(),
            role,
            caller,
            callee,
            leg,
            ice,
            key: Some(key),
            ours,
            frag: Vec::new(),
            offer: None,
            tunnel: None,
            path: None,
            streams: Vec::new(),
            state: CallState::Connecting,
            started_unix,
            last_packet: now,
            counters: CallCounters::default(),
            answered: false,
            reported: false,
            created: now,
            checks_started: None,
            ice_ms: None,
            ringing_ms: None,
            first_media_ms: None,
        })
    }
}
