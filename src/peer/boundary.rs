//! The peer's one input and one output, as str0m's `Rtc` has them: everything the network
//! and the clock bring goes in through [`Peer::handle_input`] as an [`Input`], and everything
//! the peer wants done comes out of [`Peer::poll_output`] as an [`Output`]: bytes to send,
//! reports, and finally when to wake it. Commands (join, lookup, put, fetch, leave) stay
//! methods. [`Peer::drain`] is the drive loop every synchronous driver shares (the simulator
//! and the test harnesses); the daemon's async loop polls the same outputs.

use std::time::Instant;

use bytes::Bytes;

use super::{InputBacklog, Peer, PeerEvent};
use crate::sip::framing::FramingError;
use crate::transport::{Endpoint, Transmit};

/// What reaches a peer from the network and the clock.
#[derive(Debug)]
pub enum Input {
    /// One datagram, or one frame cut from a stream, arrived.
    Receive {
        /// Where it came from, and on which listener.
        from: Endpoint,
        /// The message's bytes.
        data: Bytes,
    },
    /// A CRLF CRLF ping arrived on a stream (RFC 5626 §4.4.1).
    Ping {
        /// The stream it arrived on.
        from: Endpoint,
    },
    /// A lone CRLF pong arrived on a stream we opened (RFC 5626 §4.4.1).
    Pong {
        /// The stream it arrived on.
        from: Endpoint,
    },
    /// A stream's framing broke (RFC 3261 §18.3); the driver closes that connection.
    FramingError {
        /// The stream.
        from: Endpoint,
        /// What was wrong.
        error: FramingError,
    },
    /// A stream connection closed (either side, or a framing error).
    StreamClosed {
        /// The stream that closed.
        from: Endpoint,
    },
    /// The deadline of the last [`Output::Timeout`] has come.
    Timeout,
    /// Something happened on the media anchor's sockets (`crate::media::anchor`).
    Media(crate::media::anchor::MediaInput),
    /// What DNS said for a request of [`PeerEvent::Resolve`]: the targets in the order
    /// RFC 3263 gives, or why there are none.
    Resolved {
        /// The request's server transaction.
        sid: crate::sip::transaction::ServerTxId,
        /// The targets, or why none.
        result: Result<Vec<crate::outbound::Target>, crate::outbound::ResolveError>,
    },
    /// One turn of the driver's loop ended now (the load signal of admission control).
    LoopTurn {
        /// When the turn's work began.
        started: Instant,
        /// What the turn saw of its input queue.
        backlog: InputBacklog,
    },
}

impl Input {
    /// [`Input::Receive`].
    pub fn receive(from: Endpoint, data: impl Into<Bytes>) -> Input {
        Input::Receive { from, data: data.into() }
    }
}

/// What a peer wants done, in the order it wants it.
#[derive(Debug)]
pub enum Output {
    /// Send these bytes.
    Transmit(Transmit),
    /// Something the driver may want to know happened.
    Event(PeerEvent),
    /// Open, use or close one of the media anchor's sockets.
    Media(crate::media::anchor::MediaOutput),
    /// Nothing more for now: call [`Peer::handle_input`] with [`Input::Timeout`] at this
    /// instant, or earlier if input arrives (`None`: only when input arrives).
    Timeout(Option<Instant>),
}

impl Peer {
    /// Everything the network and the clock bring.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Receive { from, data } => self.receive(now, from, data),
            Input::Ping { from } => self.ping(now, from),
            Input::Pong { from } => self.pong(now, from),
            Input::FramingError { from, error } => self.framing_error(from, &error),
            Input::StreamClosed { from } => self.stream_closed(now, from),
            Input::Timeout => self.timeout(now),
            Input::Media(input) => self.media(now, input),
            Input::Resolved { sid, result } => self.resolved(now, sid, result),
            Input::LoopTurn { started, backlog } => self.loop_turn(started, now, backlog),
        }
    }

    /// The next thing to do: every transmit first, then every report, then when to wake.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.poll_transmit() {
            return Output::Transmit(t);
        }
        if let Some(m) = self.proxy.poll_media() {
            return Output::Media(m);
        }
        if let Some(e) = self.poll_event() {
            return Output::Event(e);
        }
        Output::Timeout(self.poll_timeout())
    }

    /// Polls every output, handing each transmit and event on in order; returns the deadline.
    pub fn drain(&mut self, mut transmit: impl FnMut(Transmit), mut event: impl FnMut(PeerEvent)) -> Option<Instant> {
        loop {
            match self.poll_output() {
                Output::Transmit(t) => transmit(t),
                Output::Event(e) => event(e),
                // No media sockets here: a driver of this loop never turns the anchor on.
                Output::Media(_) => {}
                Output::Timeout(at) => return at,
            }
        }
    }
}
