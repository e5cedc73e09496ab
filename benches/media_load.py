#!/usr/bin/env python3
"""Media relay capacity of real daemons (issue 14 item 6; docs/performance.md, "Media relay").

    python3 benches/media_load.py [--calls 25 50 100 200] [--secs 10]

Two release `p2psip node`s on loopback (alice's on 127.0.3.1, bob's on 127.0.3.2), enrolled
through a real CA (`p2psip ca init`, `ca serve`, `enroll`, then the CA is stopped), each with
its user's account. Two phones played by this script (a minimal SIP UA each: digest REGISTER,
INVITE with SDP, 200, ACK; OPTIONS pings answered) set up N calls between alice and bob across
the overlay, every call anchored by both nodes. Then for each N: G.711-sized RTP (172 bytes,
50 packets a second each way per call, the send time in the payload) from every call's two
phone sockets for --secs seconds after a 2 s warm-up (sent and counted by
`examples/rtp_load.rs`, which a Python loop could not keep up with), and it reports:

- loss: datagrams sent by one phone that never reached the other (both directions);
- latency phone to phone through both anchors (p50, p99), on one machine's loopback;
- CPU of alice's node (utime + stime from /proc) per relayed datagram, and its share of one
  core at that load.

Each node is pinned to a core of its own (taskset), the script on whichever core is free. Each
call holds three sockets at each node (a leg and a relay pair): with a descriptor limit of
1,024 a node anchors some 300 calls (`ulimit -n`). Prints a
Markdown table. Traffic stays on 127.0.0.0/8; every process it starts is ended by its PID.
Needs `cargo build --release --examples` first.
"""

import argparse
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from ca_session import ca_session

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "p2psip")
DOMAIN = "p2p.test"
A_IP, B_IP, PA_IP, PB_IP = "127.0.3.1", "127.0.3.2", "127.0.3.101", "127.0.3.102"
TICKS = os.sysconf("SC_CLK_TCK")


def enroll(work, users):
    """Enrolls and gives an account to each user, through a CA that is stopped afterwards."""
    with ca_session(BIN, work, DOMAIN, "127.0.3.9:5443") as (url, fingerprint):
        for user, pw in users:
            data = os.path.join(work, user)
            os.makedirs(data, exist_ok=True)
            subprocess.run([BIN, "enroll", f"sip:{user}@{DOMAIN}", "--ca", url, "--ca-fingerprint", fingerprint,
                            "--data-dir", data], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run([BIN, "account", "add", f"sip:{user}@{DOMAIN}", "--password-stdin", "--data-dir", data],
                           input=pw.encode(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def status(ip):
    with urllib.request.urlopen(f"http://{ip}:5090/status", timeout=5) as r:
        return json.load(r)


def cpu_secs(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Ua:
    """A phone's SIP side: one UDP socket, registered at its node's proxy."""

    def __init__(self, user, pw, ip, proxy):
        self.user, self.pw, self.ip, self.proxy = user, pw, ip, proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(5)
        self.n = 0

    def branch(self):
        self.n += 1
        return f"z9hG4bK{random.getrandbits(48):x}{self.n}"

    def send(self, text, to=None):
        self.sock.sendto(text.replace("\n", "\r\n").encode(), to or self.proxy)

    def recv(self):
        while True:
            data, src = self.sock.recvfrom(65535)
            msg = data.decode(errors="replace")
            if msg.startswith("OPTIONS "):
                self.answer(msg, 200, "OK")
                continue
            return msg, src

    def answer(self, req, code, reason, extra="", body="", ct=""):
        heads = [l for l in req.split("\r\n") if re.match(r"(?i)(via|from|to|call-id|cseq|record-route):", l)]
        text = f"SIP/2.0 {code} {reason}\n" + "\n".join(heads) + "\n" + extra
        if body:
            text += f"Content-Type: {ct}\nContent-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}\n\n{body}"
        else:
            text += "Content-Length: 0\n\n"
        self.send(text, self.proxy)

    def register(self):
        cid = f"reg{random.getrandbits(32):x}@{self.ip}"
        def req(cseq, auth=""):
            return (f"REGISTER sip:{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP {self.ip}:{self.port};branch={self.branch()};rport\n"
                    f"Max-Forwards: 70\nFrom: <sip:{self.user}@{DOMAIN}>;tag=r{cseq}\nTo: <sip:{self.user}@{DOMAIN}>\n"
                    f"Call-ID: {cid}\nCSeq: {cseq} REGISTER\nContact: <sip:{self.user}@{self.ip}:{self.port}>\n"
                    f"Expires: 3600\n{auth}Content-Length: 0\n\n")
        self.send(req(1))
        msg, _ = self.recv()
        www = re.search(r"(?im)^WWW-Authenticate: Digest (.*)$", msg).group(1)
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', www))
        realm, nonce = params["realm"], params["nonce"]
        ha1 = hashlib.md5(f"{self.user}:{realm}:{self.pw}".encode()).hexdigest()
        ha2 = hashlib.md5(f"REGISTER:sip:{DOMAIN}".encode()).hexdigest()
        cnonce, nc = "c0ffee", "00000001"
        resp = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        auth = (f'Authorization: Digest username="{self.user}", realm="{realm}", nonce="{nonce}", '
                f'uri="sip:{DOMAIN}", response="{resp}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"\n')
        self.send(req(2, auth))
        msg, _ = self.recv()
        assert msg.startswith("SIP/2.0 200"), msg


def sdp(ip, port):
    return f"v=0\no=- 1 1 IN IP4 {ip}\ns=-\nc=IN IP4 {ip}\nt=0 0\nm=audio {port} RTP/AVP 0\na=sendrecv\n"


def media_port(text):
    return int(re.search(r"(?m)^m=audio (\d+)", text.replace("\r\n", "\n")).group(1))


def setup_calls(alice, bob, n, first):
    """N calls from alice to bob; returns [(alice rtp socket, relay at A, bob rtp socket, relay at B)]."""
    calls = []
    began = time.monotonic()
    for i in range(first, first + n):
        if i % 100 == 0 and i > first:
            print(f"[setup] {i} calls, {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
        # Each call's phones have RTP port 40000 + i on their own address (nothing else uses
        # 127.0.3.101 and .102); the generator binds them.
        pa, pb = (PA_IP, 40000 + i), (PB_IP, 40000 + i)
        body = sdp(PA_IP, pa[1])
        cid = f"load{i}@bench"
        alice.send(f"INVITE sip:bob@{DOMAIN} SIP/2.0\nVia: SIP/2.0/UDP {alice.ip}:{alice.port};branch={alice.branch()};rport\n"
                   f"Max-Forwards: 70\nFrom: <sip:alice@{DOMAIN}>;tag=a{i}\nTo: <sip:bob@{DOMAIN}>\nCall-ID: {cid}\n"
                   f"CSeq: 1 INVITE\nContact: <sip:alice@{alice.ip}:{alice.port}>\nContent-Type: application/sdp\n"
                   f"Content-Length: {len(body.replace(chr(10), chr(13) + chr(10)))}\n\n{body}")
        # Bob's phone: the INVITE, anchored toward bob's node's relay port; answer at once.
        while True:
            try:
                msg, _ = bob.recv()
            except TimeoutError:
                alice.sock.settimeout(0.5)
                try:
                    got = alice.recv()[0].split("\r\n")[0]
                except TimeoutError:
                    got = "nothing"
                raise SystemExit(f"call {i}: bob's phone got no INVITE; alice's got: {got}")
            if msg.startswith("INVITE "):
                break
        relay_b = media_port(msg.split("\r\n\r\n", 1)[1])
        bob.answer(msg.replace(f"To: <sip:bob@{DOMAIN}>", f"To: <sip:bob@{DOMAIN}>;tag=b{i}", 1), 200, "OK",
                   f"Contact: <sip:bob@{bob.ip}:{bob.port}>\n", sdp(PB_IP, pb[1]), "application/sdp")
        while True:
            msg, _ = alice.recv()
            if msg.startswith("SIP/2.0 200") and f"Call-ID: {cid}" in msg:
                break
        relay_a = media_port(msg.split("\r\n\r\n", 1)[1])
        routes = re.findall(r"(?im)^Record-Route: (.*)$", msg)
        contact = re.search(r"(?im)^Contact: <([^>]+)>", msg).group(1)
        to = re.search(r"(?im)^To: (.*)$", msg).group(1)
        route = "".join(f"Route: {r}\n" for r in reversed(routes))
        alice.send(f"ACK {contact} SIP/2.0\nVia: SIP/2.0/UDP {alice.ip}:{alice.port};branch={alice.branch()};rport\n"
                   f"Max-Forwards: 70\nFrom: <sip:alice@{DOMAIN}>;tag=a{i}\nTo: {to}\nCall-ID: {cid}\nCSeq: 1 ACK\n"
                   f"{route}Content-Length: 0\n\n")
        calls.append((pa, (A_IP, relay_a), pb, (B_IP, relay_b)))
    return calls


GEN = os.path.join(ROOT, "target", "release", "examples", "rtp_load")


def load(calls, secs, pid_a, pid_b):
    """RTP both ways on every call (examples/rtp_load.rs); returns what it counted and node A's CPU."""
    lines = []
    for a, ra, b, rb in calls:
        lines.append(f"{a[0]}:{a[1]} {ra[0]}:{ra[1]} {b[0]}:{b[1]} {rb[0]}:{rb[1]}")
    gen = subprocess.Popen([GEN, str(secs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    gen.stdin.write("\n".join(lines) + "\n")
    gen.stdin.close()
    time.sleep(2.0)  # the generator's warm-up
    cpu0, cpub0, t0 = cpu_secs(pid_a), cpu_secs(pid_b), time.monotonic()
    c0 = status(A_IP)["counters"]
    time.sleep(secs)
    cpu, cpub, elapsed = cpu_secs(pid_a) - cpu0, cpu_secs(pid_b) - cpub0, time.monotonic() - t0
    c1 = status(A_IP)["counters"]
    out = gen.stdout.read()
    if not out.strip():
        raise SystemExit(f"rtp_load failed: {gen.stderr.read()}")
    result = json.loads(out)
    gen.wait(30)
    relayed = (c1["media_packets_in"] + c1["media_packets_out"]) - (c0["media_packets_in"] + c0["media_packets_out"])
    return result["sent"], result["received"], result["p50_us"], result["p99_us"], cpu, cpub, elapsed, relayed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, nargs="+", default=[25, 50, 100, 200])
    ap.add_argument("--secs", type=float, default=10.0)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="media-load.")
    enroll(work, [("alice", "alice-pw"), ("bob", "bob-pw")])
    cfg = os.path.join(work, "node.toml")
    open(cfg, "w").write(f'domain = "{DOMAIN}"\n[media]\nmax_calls = 1000\nport_min = 20000\nport_max = 29999\n')
    procs = []
    try:
        for ip, user, core, join in [(A_IP, "alice", 0, None), (B_IP, "bob", 1, A_IP)]:
            cmd = ["taskset", "-c", str(core), BIN, "node", "--config", cfg, "--data-dir", os.path.join(work, user),
                   "--listen", f"{ip}:5070", "--proxy", f"{ip}:5060", "--http", f"{ip}:5090"]
            if join:
                cmd += ["--join", f"{join}:5070"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"{user}.log"), "wb")))
            for _ in range(100):
                try:
                    status(ip)
                    break
                except Exception:
                    time.sleep(0.1)
        alice = Ua("alice", "alice-pw", PA_IP, (A_IP, 5060))
        bob = Ua("bob", "bob-pw", PB_IP, (B_IP, 5060))
        alice.register()
        bob.register()
        # Bob's record must be in the overlay before the first call.
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://{A_IP}:5090/lookup?key=sip:bob@{DOMAIN}", timeout=5) as r:
                    if "5070" in r.read().decode():
                        break
            except Exception:
                pass
            time.sleep(0.2)
        print("| calls | datagrams sent (both ways) | lost | phone to phone p50 / p99 | alice's node: CPU per relayed datagram | its share of one core | bob's node's share |")
        print("|---|---|---|---|---|---|---|")
        calls = []
        for n in sorted(args.calls):
            calls += setup_calls(alice, bob, n - len(calls), len(calls))
            time.sleep(0.5)
            sent, received, p50, p99, cpu, cpub, elapsed, relayed = load(calls, args.secs, procs[0].pid, procs[1].pid)
            lost = sent - received
            per = cpu / relayed * 1e6 if relayed else float("nan")
            print(f"| {n} | {sent} | {lost} ({lost / max(sent, 1):.3%}) | {p50:.0f} / {p99:.0f} µs | {per:.2f} µs | "
                  f"{cpu / elapsed:.0%} | {cpub / elapsed:.0%} |", flush=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
