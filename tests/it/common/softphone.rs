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
    /// (sent, received) RTP packets of the last call, once it ended.
    fn packets(&self) -> Option<(u64, u64)>;
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
    fn established(&self) -> usize {
        self.log().matches("Call established").count()
    }
    fn closed(&self) -> usize {
        self.log().matches("session closed").count()
    }
    fn packets(&self) -> Option<(u64, u64)> {
        Phone::packets(self)
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
    fn established(&self) -> usize {
        Linphone::established(self)
    }
    fn closed(&self) -> usize {
        Linphone::closed(self)
    }
    fn start_audio(&mut self) {
        self.play();
    }
    fn packets(&self) -> Option<(u64, u64)> {
        Linphone::packets(self)
    }
    fn describe(&self) -> String {
        self.events()
    }
}
