//! The encrypted leg between two nodes of a call (`docs/media-security.md`): the keys both
//! nodes derive from their signed ephemeral ECDH shares, and the frame each phone datagram
//! travels in over the ICE path.
//!
//! Keys: ECDH P-256 over the two ephemeral shares (each signed by its node's enrolled AoR key,
//! [`super::keys`]); HKDF-SHA-256 (RFC 5869) with salt = SHA-256 over the Call-ID and both ICE
//! usernames, and info naming the direction and both AoRs, gives each direction its own
//! AES-128-GCM key and 4-byte nonce salt, so the two directions never share a nonce.
//!
//! Frame (25 bytes of overhead):
//!
//! ```text
//! 0        1                 9                       n+9        n+25
//! | type   | counter (u64 BE) | AES-128-GCM(datagram) | tag (16) |
//! ```
//!
//! `type` is `0x80 | stream << 1 | rtcp`: inside RFC 7983's RTP/RTCP range (128–191), so it
//! never looks like STUN (0–3) or TURN ChannelData (64–79) on the same socket. The nonce is
//! the direction's salt followed by the counter; the first 9 bytes are the additional data. A
//! counter is never used twice under one key (the sender counts up from 0; a call never sends
//! 2^64 packets), and the receiver keeps a 1024-packet window against replays (RFC 3711 §3.3.2
//! in spirit).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::hkdf;

/// Bytes a frame adds to a datagram.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
const HEADER_LEN: usize = 9;
const TAG_LEN: usize = 16;
/// The type byte's fixed bits: RFC 7983's RTP/RTCP range.
const TYPE_BASE: u8 = 0x80;
/// Streams a call may carry (five bits of the type byte).
pub const MAX_STREAMS: usize = 32;
/// Packets the replay window remembers behind the highest counter seen.
pub const REPLAY_WINDOW: u64 = 1024;
const LABEL: &[u8] = b"p2psip-media-v1";

/// Which way a frame travels: from the caller's node to the callee's, or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the node that sent the INVITE.
    FromCaller,
    /// From the node that answered it.
    FromCallee,
}

impl Direction {
    fn label(self) -> &'static [u8] {
        match self {
            Direction::FromCaller => b"caller to callee",
            Direction::FromCallee => b"callee to caller",
        }
    }
}

/// What a frame carries: which stream of the call, and whether RTP or RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// The m-line index (RFC 3264 keeps it across offer and answer).
    pub stream: u8,
    /// RTCP rather than RTP.
    pub rtcp: bool,
}

impl Channel {
    fn type_byte(self) -> u8 {
        TYPE_BASE | (self.stream & 0x1f) << 1 | u8::from(self.rtcp)
    }

    fn from_type_byte(b: u8) -> Option<Channel> {
        (b & 0xc0 == TYPE_BASE).then_some(Channel { stream: (b >> 1) & 0x1f, rtcp: b & 1 == 1 })
    }
}

/// Whether a datagram on the leg's socket is a tunnel frame (not STUN, not TURN).
pub fn is_frame(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| b & 0xc0 == TYPE_BASE)
}

/// Why a frame was dropped. Every one of these is the far side's (or an attacker's) doing:
/// counted, never fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Too short to hold a header and a tag, or not a frame's type byte.
    #[error("not a tunnel frame")]
    Malformed,
    /// The tag does not verify: forged, corrupted, or under another call's keys.
    #[error("frame does not authenticate")]
    Forged,
    /// A counter already seen, or too far behind the newest.
    #[error("frame replayed or too old")]
    Replayed,
}

/// What both nodes bind their keys to: the call and the two ICE usernames (RFC 8445 §5.3:
/// fresh per session), plus the two AoRs the certificates proved.
#[derive(Debug, Clone, Copy)]
pub struct KeyContext<'a> {
    /// The call's Call-ID.
    pub call_id: &'a str,
    /// The caller's AoR (From), as its certificate names it.
    pub caller: &'a str,
    /// The callee's AoR (To), as its certificate names it.
    pub callee: &'a str,
    /// The caller's node's ICE ufrag.
    pub caller_ufrag: &'a str,
    /// The callee's node's ICE ufrag.
    pub callee_ufrag: &'a str,
}

/// Length-prefixed concatenation, so no two different field lists give the same bytes.
pub(super) fn encode_fields(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        out.extend_from_slice(&u32::try_from(f.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// A key and nonce salt, 20 bytes out of HKDF.
struct Okm20;

impl hkdf::KeyType for Okm20 {
    fn len(&self) -> usize {
        20
    }
}

/// One direction's AEAD key and nonce salt.
struct DirectionKey {
    key: LessSafeKey,
    salt: [u8; 4],
}

impl DirectionKey {
    fn derive(prk: &hkdf::Prk, ctx: &KeyContext<'_>, dir: Direction) -> Option<DirectionKey> {
        let info = encode_fields(&[LABEL, dir.label(), ctx.caller.as_bytes(), ctx.callee.as_bytes()]);
        let parts = [info.as_slice()];
        let okm = prk.expand(&parts, Okm20).ok()?;
        let mut bytes = [0u8; 20];
        okm.fill(&mut bytes).ok()?;
        let key = UnboundKey::new(&AES_128_GCM, &bytes[..16]).ok()?;
        let mut salt = [0u8; 4];
        salt.copy_from_slice(&bytes[16..]);
        Some(DirectionKey { key: LessSafeKey::new(key), salt })
    }

    fn nonce(&self, counter: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(&counter.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }
}

/// The tunnel of one call at one node: seals what its phone sends, opens what the far node
/// sent. Built by [`super::keys::KeyShare::agree`].
pub struct Tunnel {
    send: DirectionKey,
    recv: DirectionKey,
    next_counter: u64,
    window: ReplayWindow,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("Tunnel").field("sent", &self.next_counter).finish_non_exhaustive()
    }
}

impl Tunnel {
    /// The tunnel for the node on side `we_send`, from the ECDH shared secret.
    pub(super) fn from_secret(secret: &[u8], ctx: &KeyContext<'_>, we_send: Direction) -> Option<Tunnel> {
        let salt_input =
            encode_fields(&[LABEL, ctx.call_id.as_bytes(), ctx.caller_ufrag.as_bytes(), ctx.callee_ufrag.as_bytes()]);
        let salt = ring::digest::digest(&ring::digest::SHA256, &salt_input);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt.as_ref()).extract(secret);
        let other = match we_send {
            Direction::FromCaller => Direction::FromCallee,
            Direction::FromCallee => Direction::FromCaller,
        };
        Some(Tunnel {
            send: DirectionKey::derive(&prk, ctx, we_send)?,
            recv: DirectionKey::derive(&prk, ctx, other)?,
            next_counter: 0,
            window: ReplayWindow::default(),
        })
    }

    /// `datagram` from our phone, sealed into a frame for the far node.
    pub fn seal(&mut self, channel: Channel, datagram: &[u8]) -> Vec<u8> {
        let counter = self.next_counter;
        self.next_counter += 1;
        let mut frame = Vec::with_capacity(datagram.len() + OVERHEAD);
        frame.push(channel.type_byte());
        frame.extend_from_slice(&counter.to_be_bytes());
        frame.extend_from_slice(datagram);
        let (header, body) = frame.split_at_mut(HEADER_LEN);
        let tag = self
            .send
            .key
            .seal_in_place_separate_tag(self.send.nonce(counter), Aad::from(&*header), body)
            .expect("AES-GCM seals any datagram shorter than 64 GiB");
        frame.extend_from_slice(tag.as_ref());
        frame
    }

    /// A frame from the far node, opened: its channel and the phone datagram inside.
    pub fn open(&mut self, frame: &[u8]) -> Result<(Channel, Vec<u8>), FrameError> {
        if frame.len() < OVERHEAD {
            return Err(FrameError::Malformed);
        }
        let channel = Channel::from_type_byte(frame[0]).ok_or(FrameError::Malformed)?;
        let mut c = [0u8; 8];
        c.copy_from_slice(&frame[1..HEADER_LEN]);
        let counter = u64::from_be_bytes(c);
        // Cheap check first: a replay is refused without spending an AES-GCM open on it.
        if !self.window.is_fresh(counter) {
            return Err(FrameError::Replayed);
        }
        let mut body = frame[HEADER_LEN..].to_vec();
        let plain_len = self
            .recv
            .key
            .open_in_place(self.recv.nonce(counter), Aad::from(&frame[..HEADER_LEN]), &mut body)
            .map_err(|_| FrameError::Forged)?
            .len();
        body.truncate(plain_len);
        // Only an authentic frame moves the window, so forgeries cannot push it forward.
        self.window.accept(counter);
        Ok((channel, body))
    }
}

/// The highest counter seen and a bitmap of the [`REPLAY_WINDOW`] counters below it.
#[derive(Debug, Default)]
struct ReplayWindow {
    /// One more than the highest counter accepted (0: none yet).
    top: u64,
    /// Bit i set: counter `top - 1 - i` was accepted.
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    fn is_fresh(&self, counter: u64) -> bool {
        if counter >= self.top {
            return true;
        }
        let behind = self.top - 1 - counter;
        behind < REPLAY_WINDOW && !self.bit(behind)
    }

    fn bit(&self, i: u64) -> bool {
        self.seen[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    fn accept(&mut self, counter: u64) {
        if counter >= self.top {
            let shift = counter + 1 - self.top;
            self.shift(shift);
            self.top = counter + 1;
        }
        let i = self.top - 1 - counter;
        self.seen[(i / 64) as usize] |= 1 << (i % 64);
    }

    /// Moves every bit `by` places further behind (older).
    fn shift(&mut self, by: u64) {
        if by >= REPLAY_WINDOW {
            self.seen = Default::default();
            return;
        }
        let words = (by / 64) as usize;
        let bits = (by % 64) as u32;
        let n = self.seen.len();
        for i in (0..n).rev() {
            let from = i.checked_sub(words);
            let hi = from.map_or(0, |j| self.seen[j]);
            let lo = from.and_then(|j| j.checked_sub(1)).map_or(0, |j| self.seen[j]);
            self.seen[i] = if bits == 0 { hi } else { hi << bits | lo >> (64 - bits) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> KeyContext<'static> {
        KeyContext {
            call_id: "c1@example",
            caller: "sip:alice@p2p.test",
            callee: "sip:bob@p2p.test",
            caller_ufrag: "AAAA",
            callee_ufrag: "BBBB",
        }
    }

    fn pair() -> (Tunnel, Tunnel) {
        let secret = [7u8; 32];
        (
            Tunnel::from_secret(&secret, &ctx(), Direction::FromCaller).unwrap(),
            Tunnel::from_secret(&secret, &ctx(), Direction::FromCallee).unwrap(),
        )
    }

    #[test]
    fn frames_open_at_the_other_side_only() {
        let (mut a, mut b) = pair();
        let ch = Channel { stream: 3, rtcp: true };
        let f = a.seal(ch, b"rtp packet");
        assert_eq!(f.len(), 10 + OVERHEAD);
        assert!(is_frame(&f));
        assert_eq!(b.open(&f).unwrap(), (ch, b"rtp packet".to_vec()));
        // The sender's own frame does not open under its receive key (directions differ).
        let f2 = a.seal(ch, b"x");
        assert_eq!(a.open(&f2), Err(FrameError::Forged));
        let back = b.seal(Channel { stream: 0, rtcp: false }, b"answer");
        assert_eq!(a.open(&back).unwrap().1, b"answer");
    }

    #[test]
    fn tampering_and_other_calls_keys_are_refused() {
        let (mut a, mut b) = pair();
        let mut f = a.seal(Channel { stream: 0, rtcp: false }, b"hello");
        f[12] ^= 1;
        assert_eq!(b.open(&f), Err(FrameError::Forged));
        // The stream number is authenticated too.
        let mut g = a.seal(Channel { stream: 0, rtcp: false }, b"hello");
        g[0] ^= 2;
        assert_eq!(b.open(&g), Err(FrameError::Forged));
        let mut other_ctx = ctx();
        other_ctx.call_id = "c2@example";
        let mut c = Tunnel::from_secret(&[7u8; 32], &other_ctx, Direction::FromCallee).unwrap();
        let h = a.seal(Channel { stream: 0, rtcp: false }, b"hello");
        assert_eq!(c.open(&h), Err(FrameError::Forged));
        assert_eq!(b.open(&[0x80; 10]), Err(FrameError::Malformed));
        assert_eq!(b.open(&[0x00; 40]), Err(FrameError::Malformed));
    }

    #[test]
    fn replays_and_old_frames_are_refused_reordering_is_not() {
        let (mut a, mut b) = pair();
        let frames: Vec<Vec<u8>> =
            (0..2000u32).map(|i| a.seal(Channel { stream: 0, rtcp: false }, &i.to_be_bytes())).collect();
        // Out of order within the window: fine.
        assert!(b.open(&frames[5]).is_ok());
        assert!(b.open(&frames[3]).is_ok());
        assert!(b.open(&frames[4]).is_ok());
        assert_eq!(b.open(&frames[4]), Err(FrameError::Replayed));
        assert!(b.open(&frames[1500]).is_ok());
        // 1500 - 3 > window: too old, even though never seen.
        assert_eq!(b.open(&frames[2]), Err(FrameError::Replayed));
        assert!(b.open(&frames[1500 - 1000]).is_ok());
        assert_eq!(b.open(&frames[1500 - 1000]), Err(FrameError::Replayed));
        assert_eq!(b.open(&frames[1500]), Err(FrameError::Replayed));
        for f in &frames[1501..] {
            assert!(b.open(f).is_ok());
        }
        assert_eq!(b.open(&frames[1999]), Err(FrameError::Replayed));
    }

    #[test]
    fn window_shift_keeps_bits_across_words() {
        let mut w = ReplayWindow::default();
        for c in [0u64, 1, 63, 64, 65, 200] {
            w.accept(c);
        }
        for c in [0u64, 1, 63, 64, 65, 200] {
            assert!(!w.is_fresh(c), "{c}");
        }
        for c in [2u64, 62, 66, 199, 201] {
            assert!(w.is_fresh(c), "{c}");
        }
        w.accept(200 + 1023);
        assert!(!w.is_fresh(200));
        assert!(!w.is_fresh(199), "beyond the window");
        w.accept(5000);
        assert!(!w.is_fresh(200 + 1023), "beyond the window after a jump");
        assert!(w.is_fresh(4000));
    }
}
