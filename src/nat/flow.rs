//! A client's outbound flow to its edge peer (RFC 5626), sans-IO: the REGISTER that binds the
//! client's user at the edge over the flow, its refresh, and the STUN keep-alives that hold
//! the NAT's mapping open (§4.4.2: a Binding request every ~25 s, or what the edge's
//! `Flow-Timer` asks, §10.2; an unanswered one means the flow, and likely the edge, is gone).
//!
//! The caller ([`crate::peer`]) builds and sends the REGISTER when told ([`FlowAction::Register`])
//! and reports how it ended; it sends the keep-alives from the overlay socket and hands back
//! their answers. Which peer is the edge is the ring's business ([`crate::overlay::Chord`]'s
//! client peers): [`Flow::set_edge`] follows it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun::{binding_request, StunTransactionId};

/// RFC 5626 §4.4.2's keep-alive interval for UDP: 95–120 s is its default for a flow the edge
/// names no timer for, but NATs forget UDP mappings after as little as 30 s (RFC 4787 REQ-5
/// asks for at least 2 minutes, and many do not comply); 25 s is what SIP phones and the
/// research use.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(25);
/// How long a keep-alive may go unanswered before the flow counts as failed (§4.4.2 says
/// "within 10 seconds").
pub const KEEPALIVE_ANSWER: Duration = Duration::from_secs(10);
/// The Expires the client asks of its edge.
pub const REGISTER_EXPIRES: u32 = 600;
/// How long after a refusal (503) or failure before the same edge is tried again, unless it
/// named a Retry-After.
const RETRY: Duration = Duration::from_secs(5);

/// What the flow asks the caller to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowAction {
    /// Send a REGISTER to `edge` (a first one or a refresh).
    Register {
        /// The edge peer's overlay address.
        edge: SocketAddr,
    },
    /// Send `data` (a STUN Binding request) to `edge` from the overlay socket.
    KeepAlive {
        /// The edge peer's overlay address.
        edge: SocketAddr,
        /// The request.
        data: Vec<u8>,
    },
    /// The flow to `edge` failed (keep-alive unanswered): another edge is needed.
    Lost {
        /// The edge that stopped answering.
        edge: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No edge.
    Idle,
    /// A REGISTER is on its way to the edge.
    Registering,
    /// Bound at the edge.
    Registered,
    /// Waiting before trying again.
    Waiting { until: Instant },
}

/// The flow (sans-IO).
#[derive(Debug)]
pub struct Flow {
    keepalive: Duration,
    /// Over TCP: CRLF pings and pongs instead of STUN (§4.4.1).
    tcp: bool,
    edge: Option<SocketAddr>,
    state: State,
    /// When the binding at the edge is refreshed.
    refresh_at: Option<Instant>,
    next_keepalive: Option<Instant>,
    /// The keep-alive in flight, and when it counts as unanswered.
    keepalive_sent: Option<(StunTransactionId, Instant)>,
    /// When the flow was last bound at an edge, and which.
    registered: Option<(SocketAddr, Instant)>,
    /// The address the edge's keep-alive answers name: our NAT's mapping of the flow.
    mapped: Option<SocketAddr>,
    actions: VecDeque<FlowAction>,
}

impl Flow {
    /// A flow with no edge; `keepalive` is the interval of STUN keep-alives (0: the default).
    pub fn new(keepalive: Duration) -> Flow {
        Flow {
            keepalive: if keepalive.is_zero() { DEFAULT_KEEPALIVE } else { keepalive },
            tcp: false,
            edge: None,
            state: State::Idle,
            refresh_at: None,
            next_keepalive: None,
            keepalive_sent: None,
            registered: None,
            mapped: None,
            actions: VecDeque::new(),
        }
    }

    /// The same flow over TCP: keep-alives are CRLF pings answered by CRLF pongs (§4.4.1).
    pub fn over_tcp(mut self) -> Flow {
        self.tcp = true;
        self
    }

    /// Whether the flow runs over TCP.
    pub fn is_tcp(&self) -> bool {
        self.tcp
    }

    /// The edge answered our ping with a pong (over TCP): the flow is alive.
    pub fn pong(&mut self) {
        if self.tcp {
            self.keepalive_sent = None;
        }
    }

    /// The stream to the edge closed: the flow has failed.
    pub fn stream_closed(&mut self, edge: SocketAddr) {
        if self.tcp && self.edge == Some(edge) && self.state != State::Idle {
            self.state = State::Idle;
            self.edge = None;
            self.keepalive_sent = None;
            self.actions.push_back(FlowAction::Lost { edge });
        }
    }

    /// The edge the client is bound at now, if any.
    pub fn registered_edge(&self) -> Option<SocketAddr> {
        (self.state == State::Registered).then_some(self.edge).flatten()
    }

    /// The edge is now `edge` (or none): a new one is registered with at once.
    pub fn set_edge(&mut self, now: Instant, edge: Option<SocketAddr>) {
        if edge == self.edge && self.state != State::Idle {
            return;
        }
        self.edge = edge;
        self.keepalive_sent = None;
        self.next_keepalive = None;
        self.refresh_at = None;
        match edge {
            Some(edge) => {
                self.state = State::Registering;
                self.actions.push_back(FlowAction::Register { edge });
            }
            None => self.state = State::Idle,
        }
        let _ = now;
    }

    /// The edge answered the REGISTER with 2xx, granting `expires` seconds; `flow_timer` is
    /// its `Flow-Timer` (§10.2), the keep-alive interval it wants, if any.
    pub fn registered(&mut self, now: Instant, edge: SocketAddr, expires: u32, flow_timer: Option<u32>) {
        if self.edge != Some(edge) {
            return;
        }
        self.state = State::Registered;
        self.registered = Some((edge, now));
        // Refreshed at three quarters of what was granted (at least a minute's notice).
        let expires = Duration::from_secs(u64::from(expires.max(60)));
        self.refresh_at = Some(now + expires.mul_f64(0.75));
        let interval = flow_timer.map_or(self.keepalive, |t| self.keepalive.min(Duration::from_secs(t.max(1).into())));
        self.next_keepalive = Some(now + interval);
    }

    /// The edge refused (503, full) or the REGISTER failed: try again after `retry_after`,
    /// unless the caller picks another edge first.
    pub fn register_failed(&mut self, now: Instant, edge: SocketAddr, retry_after: Option<Duration>) {
        if self.edge != Some(edge) {
            return;
        }
        self.state = State::Waiting { until: now + retry_after.unwrap_or(RETRY) };
        self.refresh_at = None;
        self.next_keepalive = None;
        self.keepalive_sent = None;
    }

    /// Whether `id` is our keep-alive in flight.
    pub fn owns(&self, id: &StunTransactionId) -> bool {
        !self.tcp && self.keepalive_sent.is_some_and(|(k, _)| k == *id)
    }

    /// The edge answered the keep-alive `id` (§4.4.2), seeing us at `mapped`: the flow is
    /// alive. A mapping that changed (the NAT forgot us, or the laptop moved) means the edge's
    /// binding points at a dead address: registered again at once (§4.4.1).
    pub fn keepalive_answered(&mut self, id: StunTransactionId, mapped: SocketAddr) {
        if !self.owns(&id) {
            return;
        }
        self.keepalive_sent = None;
        if self.mapped.is_some_and(|m| m != mapped) {
            if let (Some(edge), State::Registered) = (self.edge, self.state) {
                self.state = State::Registering;
                self.actions.push_back(FlowAction::Register { edge });
            }
        }
        self.mapped = Some(mapped);
    }

    /// Keep-alives, refreshes and retries that are due.
    pub fn handle_timeout(&mut self, now: Instant, mut new_id: impl FnMut() -> StunTransactionId) {
        let Some(edge) = self.edge else { return };
        match self.state {
            State::Idle | State::Registering => {}
            State::Waiting { until } => {
                if now >= until {
                    self.state = State::Registering;
                    self.actions.push_back(FlowAction::Register { edge });
                }
            }
            State::Registered => {
                if self.keepalive_sent.is_some_and(|(_, deadline)| now >= deadline) {
                    self.keepalive_sent = None;
                    self.state = State::Idle;
                    self.edge = None;
                    self.actions.push_back(FlowAction::Lost { edge });
                    return;
                }
                if self.refresh_at.is_some_and(|at| now >= at) {
                    self.refresh_at = None;
                    self.actions.push_back(FlowAction::Register { edge });
                }
                if self.next_keepalive.is_some_and(|at| now >= at) {
                    let id = new_id();
                    self.keepalive_sent = Some((id, now + KEEPALIVE_ANSWER));
                    self.next_keepalive = Some(now + self.keepalive);
                    let data = if self.tcp { b"\r\n\r\n".to_vec() } else { binding_request(id) };
                    self.actions.push_back(FlowAction::KeepAlive { edge, data });
                }
            }
        }
    }

    /// When [`Flow::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { until } => Some(until),
            State::Registered => [self.refresh_at, self.next_keepalive, self.keepalive_sent.map(|(_, at)| at)]
                .into_iter()
                .flatten()
                .min(),
            State::Idle | State::Registering => None,
        }
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<FlowAction> {
        self.actions.pop_front()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)] // one real reading as the virtual clock's epoch
    use super::*;
    use crate::nat::stun::counting_ids;

    #[test]
    fn registers_keeps_alive_refreshes_and_reports_a_silent_edge() {
        let t0 = Instant::now();
        let edge: SocketAddr = "203.0.113.20:5070".parse().unwrap();
        let mut flow = Flow::new(Duration::ZERO);
        flow.set_edge(t0, Some(edge));
        assert_eq!(flow.poll_action(), Some(FlowAction::Register { edge }));
        assert_eq!(flow.registered_edge(), None);
        flow.registered(t0, edge, 600, Some(20));
        assert_eq!(flow.registered_edge(), Some(edge));
        // The edge's Flow-Timer (20 s) is shorter than ours (25 s): it wins.
        assert_eq!(flow.poll_timeout(), Some(t0 + Duration::from_secs(20)));
        let t1 = t0 + Duration::from_secs(20);
        flow.handle_timeout(t1, counting_ids());
        let Some(FlowAction::KeepAlive { edge: to, data }) = flow.poll_action() else { panic!("a keep-alive") };
        assert_eq!(to, edge);
        let id: StunTransactionId = data[8..20].try_into().unwrap();
        let mapped: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        flow.keepalive_answered(id, mapped);
        // Refreshed at 450 s (¾ of 600); keep-alives every 25 s meanwhile.
        let mut now = t1;
        let mut registers = 0;
        while now < t0 + Duration::from_secs(460) {
            now = flow.poll_timeout().unwrap();
            flow.handle_timeout(now, counting_ids());
            while let Some(a) = flow.poll_action() {
                match a {
                    FlowAction::KeepAlive { data, .. } => {
                        flow.keepalive_answered(data[8..20].try_into().unwrap(), mapped)
                    }
                    FlowAction::Register { .. } => {
                        registers += 1;
                        flow.registered(now, edge, 600, Some(20));
                    }
                    FlowAction::Lost { .. } => panic!("answered keep-alives lose nothing"),
                }
            }
        }
        assert_eq!(registers, 1);
        // A keep-alive left unanswered for 10 s: the flow is lost.
        let at = flow.poll_timeout().unwrap();
        flow.handle_timeout(at, counting_ids());
        while flow.poll_action().is_some() {}
        let at = flow.poll_timeout().unwrap();
        flow.handle_timeout(at, counting_ids());
        let lost = std::iter::from_fn(|| flow.poll_action()).find(|a| matches!(a, FlowAction::Lost { .. }));
        assert_eq!(lost, Some(FlowAction::Lost { edge }));
        assert_eq!(flow.registered_edge(), None);
    }

    #[test]
    fn a_keep_alive_answer_naming_a_new_mapping_registers_again() {
        let t0 = Instant::now();
        let edge: SocketAddr = "203.0.113.20:5070".parse().unwrap();
        let mut flow = Flow::new(Duration::from_secs(25));
        flow.set_edge(t0, Some(edge));
        flow.poll_action();
        flow.registered(t0, edge, 600, None);
        let answer = |flow: &mut Flow, at: Instant, mapped: &str| {
            flow.handle_timeout(at, counting_ids());
            let Some(FlowAction::KeepAlive { data, .. }) = flow.poll_action() else { panic!("a keep-alive") };
            flow.keepalive_answered(data[8..20].try_into().unwrap(), mapped.parse().unwrap());
            flow.poll_action()
        };
        assert_eq!(answer(&mut flow, t0 + Duration::from_secs(25), "198.51.100.7:40000"), None);
        assert_eq!(answer(&mut flow, t0 + Duration::from_secs(50), "198.51.100.7:40000"), None);
        let moved = answer(&mut flow, t0 + Duration::from_secs(75), "198.51.100.9:41000");
        assert_eq!(moved, Some(FlowAction::Register { edge }));
    }

    #[test]
    fn a_refusal_waits_for_retry_after_and_a_new_edge_registers_at_once() {
        let t0 = Instant::now();
        let (a, b): (SocketAddr, SocketAddr) =
            ("203.0.113.20:5070".parse().unwrap(), "203.0.113.21:5070".parse().unwrap());
        let mut flow = Flow::new(Duration::ZERO);
        flow.set_edge(t0, Some(a));
        flow.poll_action();
        flow.register_failed(t0, a, Some(Duration::from_secs(30)));
        assert_eq!(flow.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        flow.set_edge(t0, Some(b));
        assert_eq!(flow.poll_action(), Some(FlowAction::Register { edge: b }));
        // A late answer from the old edge changes nothing.
        flow.registered(t0, a, 600, None);
        assert_eq!(flow.registered_edge(), None);
    }
}
