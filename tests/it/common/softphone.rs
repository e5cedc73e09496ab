//! What the media tests ask of any real phone, baresip's or Linphone's: dial, hang up, count
//! calls connected and ended, start its audio, and report its RTP packet counts.

use super::baresip::Phone;
use super::linphone::Linphone;

pub(crate) trait Softphone {
    fn name(&self) -> &str;
    fn dial(&mut self, aor: &str);
    fn hang_up(&mut self);
    /// Calls connected so far (placed or answered).
    fn established(&self) -> usize;
    /// Calls the other side ended so far.
    fn closed(&self) -> usize;
    /// What the phone must do once a call is up to send audio (a baresip phone's `ausine`
    /// runs by itself).
    fn start_audio(&mut self) {}
    /// Puts the call on hold (a re-INVITE with `a=sendonly`, RFC 3264 §8.4).
    fn hold(&mut self);
    /// Takes it off hold.
    fn resume(&mut self);
    /// RTP counters the phone has reported so far, summed: (reports, sent, received). A phone
    /// reports when a call's stream ends (Linphone also when it pauses one).
    fn rtp_totals(&self) -> (u64, u64, u64);
    /// Its log, for a failure message.
    fn describe(&self) -> String;
}

impl Softphone for Phone {
    fn name(&self) -> &str {
        self.name
    }
    fn dial(&mut self, aor: &str) {
        self.command(&format!("/dial {aor}"));
    }
    fn hang_up(&mut self) {
        self.command("/hangup");
    }
    fn hold(&mut self) {
        self.command("/hold");
    }
    fn resume(&mut self) {
        self.command("/resume");
    }
    fn established(&self) -> usize {
        self.log().matches("Call established").count()
    }
    fn closed(&self) -> usize {
        self.log().matches("session closed").count()
    }
    fn rtp_totals(&self) -> (u64, u64, u64) {
        let log = self.log();
        let counts = log.lines().filter_map(|l| {
            let mut n = l.trim_start().strip_prefix("packets:")?.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some((n.next()??, n.next()??))
        });
        counts.fold((0, 0, 0), |(r, s, x), (tx, rx)| (r + 1, s + tx, x + rx))
    }
    fn describe(&self) -> String {
        self.log().lines().filter(|l| !l.contains("audio=")).collect::<Vec<_>>().join("\n")
    }
}

impl Softphone for Linphone {
    fn name(&self) -> &str {
        self.name
    }
    fn dial(&mut self, aor: &str) {
        self.command(&format!("call {aor}"));
    }
    fn hang_up(&mut self) {
        self.command("terminate");
    }
    fn hold(&mut self) {
        // Resuming while the pause is still being negotiated is refused: wait for Paused.
        let paused = |p: &Linphone| p.events().matches("Event: LinphoneCallPaused\n").count();
        let before = paused(self);
        self.command("call-pause");
        let done = super::wait_for(super::baresip::WAIT, || (paused(self) > before).then_some(()));
        assert!(done.is_some(), "{}: the call never paused:\n{}", self.name, self.events());
    }
    fn resume(&mut self) {
        // A paused call is no longer the current one: name it.
        let id = self.last_call_id().unwrap_or_default();
        self.command(&format!("call-resume {id}"));
    }
    fn established(&self) -> usize {
        Linphone::established(self)
    }
    fn closed(&self) -> usize {
        Linphone::closed(self)
    }
    fn start_audio(&mut self) {
        self.play();
    }
    fn rtp_totals(&self) -> (u64, u64, u64) {
        Linphone::rtp_totals(self)
    }
    fn describe(&self) -> String {
        self.events()
    }
}
