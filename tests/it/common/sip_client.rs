//! A plain SIP client over TCP for tests that need exact status codes from a phone's side:
//! registering with a digest (RFC 7616, MD5, qop=auth) and sending requests on that flow.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::read_tcp_message;

/// The value of `name="..."` in a challenge.
pub(crate) fn auth_param<'a>(head: &'a str, name: &str) -> &'a str {
    let start = head.find(&format!("{name}=\"")).map(|i| i + name.len() + 2).expect("parameter");
    &head[start..start + head[start..].find('"').expect("closing quote")]
}

/// Registers `user` over a new TCP connection, answering the digest challenge (MD5,
/// qop=auth, RFC 7616); returns the open connection and the final response's head.
pub(crate) fn register_over_tcp(proxy: SocketAddr, user: &str, password: &str) -> (TcpStream, String) {
    use p2psip::proxy::digest::{ha1, Algorithm};
    let mut s = TcpStream::connect(proxy).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let local = s.local_addr().expect("local address");
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:p2p.test SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKtcpreg{cseq};rport\r\n\
             From: <sip:{user}@p2p.test>;tag=tcp1\r\nTo: <sip:{user}@p2p.test>\r\nCall-ID: tcp-reg-{user}\r\n\
             CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{local};transport=tcp>\r\nExpires: 600\r\n\
             Max-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    s.write_all(request(1, "").as_bytes()).expect("send");
    let challenge = read_tcp_message(&mut s).expect("401");
    let (realm, nonce) = (auth_param(&challenge, "realm"), auth_param(&challenge, "nonce"));
    let h1 = ha1(Algorithm::Md5, user, realm, password);
    let h2 = Algorithm::Md5.hash("REGISTER:sip:p2p.test");
    let response = Algorithm::Md5.hash(&format!("{h1}:{nonce}:00000001:cn:auth:{h2}"));
    let auth = format!(
        "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"sip:p2p.test\", \
         algorithm=MD5, qop=auth, nc=00000001, cnonce=\"cn\", response=\"{response}\"\r\n"
    );
    s.write_all(request(2, &auth).as_bytes()).expect("send");
    let ok = read_tcp_message(&mut s).expect("final response");
    (s, ok)
}

/// Sends a MESSAGE from `user` to `to` with `body` (CSeq `cseq`) on a flow registered with
/// [`register_over_tcp`], and returns the final response's head. Requests the node sends on
/// the flow meanwhile are answered (its OPTIONS pings) or skipped.
pub(crate) fn message_over_tcp(s: &mut TcpStream, user: &str, to: &str, body: &str, cseq: u32) -> String {
    let local = s.local_addr().expect("local address");
    let request = format!(
        "MESSAGE {to} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKmsg{cseq};rport\r\n\
         From: <sip:{user}@p2p.test>;tag=m{cseq}\r\nTo: <{to}>\r\nCall-ID: tcp-msg-{user}-{cseq}\r\n\
         CSeq: {cseq} MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).expect("send");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    loop {
        let head = read_tcp_message(s).expect("an answer to the MESSAGE");
        // The node's keep-alive ping (the registrar unregisters a phone that ignores them).
        if head.starts_with("OPTIONS ") {
            s.write_all(ping_answer(&head).as_bytes()).expect("answer the ping");
            continue;
        }
        let cseq_line = head.lines().find(|l| l.to_ascii_lowercase().starts_with("cseq:")).unwrap_or("");
        let status: Option<u16> = head.strip_prefix("SIP/2.0 ").and_then(|r| r.get(..3)?.parse().ok());
        if status.is_some_and(|s| s >= 200) && cseq_line.contains(&format!("{cseq} MESSAGE")) {
            return head;
        }
    }
}

/// The `200 OK` a phone sends for the node's OPTIONS ping whose head is `head`.
fn ping_answer(head: &str) -> String {
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for line in head.lines().skip(1) {
        let name = line.split(':').next().unwrap_or("").trim().to_ascii_lowercase();
        if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"].contains(&name.as_str()) {
            ok += line;
            ok += "\r\n";
        }
    }
    ok + "Content-Length: 0\r\n\r\n"
}

/// Answers the node's OPTIONS pings on `s` with 200 until the connection closes.
pub(crate) fn answer_pings(mut s: TcpStream) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        s.set_read_timeout(None).ok();
        while let Some(head) = read_tcp_message(&mut s) {
            if head.starts_with("OPTIONS ") && s.write_all(ping_answer(&head).as_bytes()).is_err() {
                return;
            }
        }
    })
}

/// One call from `user` to `to` on a flow registered with [`register_over_tcp`]: the INVITE
/// (with a G.711 offer), its answer, the ACK, then the BYE and its answer. Returns the time from
/// sending the INVITE to its 200 OK. Panics if the call is not answered.
pub(crate) fn call_over_tcp(s: &mut TcpStream, user: &str, to: &str, n: u32) -> Duration {
    let local = s.local_addr().expect("local address");
    let sdp = format!(
        "v=0\r\no=- {n} {n} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = local.ip(),
        port = 40000 + 2 * (n % 1000),
    );
    let call_id = format!("tcp-call-{user}-{n}");
    let invite = format!(
        "INVITE {to} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKinv{n};rport\r\n\
         From: <sip:{user}@p2p.test>;tag=c{n}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:{user}@{local};transport=tcp>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let began = std::time::Instant::now();
    s.write_all(invite.as_bytes()).expect("send");
    let (ok, took) = loop {
        let head = read_tcp_message(s).expect("an answer to the INVITE");
        if head.starts_with("OPTIONS ") {
            s.write_all(ping_answer(&head).as_bytes()).expect("answer the ping");
            continue;
        }
        let status: Option<u16> = head.strip_prefix("SIP/2.0 ").and_then(|r| r.get(..3)?.parse().ok());
        match status {
            Some(200) if head.contains("1 INVITE") => break (head, began.elapsed()),
            Some(code) if code >= 300 && head.contains("1 INVITE") => panic!("the call failed: {head}"),
            _ => continue,
        }
    };
    // §13.2.2.4 and §12.1.2: the dialog's route set is the 200's Record-Route reversed, its
    // remote target the 200's Contact.
    let header = |name: &str| -> Vec<String> {
        ok.lines()
            .filter_map(|l| l.split_once(':').filter(|(h, _)| h.trim().eq_ignore_ascii_case(name)))
            .flat_map(|(_, v)| v.split(',').map(|x| x.trim().to_owned()).collect::<Vec<_>>())
            .collect()
    };
    let mut routes = header("Record-Route");
    routes.reverse();
    let target = header("Contact")
        .first()
        .and_then(|c| Some(c.split_once('<')?.1.split_once('>')?.0.to_owned()))
        .expect("a Contact");
    let to_header = ok.lines().find(|l| l.to_ascii_lowercase().starts_with("to:")).expect("To").to_owned();
    let route_lines: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{branch}{n};rport\r\n{route_lines}\
             From: <sip:{user}@p2p.test>;tag=c{n}\r\n{to_header}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    s.write_all(in_dialog("ACK", 1, "ack").as_bytes()).expect("send ACK");
    s.write_all(in_dialog("BYE", 2, "bye").as_bytes()).expect("send BYE");
    loop {
        let head = read_tcp_message(s).expect("an answer to the BYE");
        if head.starts_with("OPTIONS ") {
            s.write_all(ping_answer(&head).as_bytes()).expect("answer the ping");
            continue;
        }
        if head.starts_with("SIP/2.0 ") && head.contains("2 BYE") {
            break;
        }
    }
    took
}
