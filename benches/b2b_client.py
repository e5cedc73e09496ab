#!/usr/bin/env python3
"""One SIP client that sends requests back to back over UDP: the next only once the answer to
the last has come (never more than one outstanding), for a number of seconds. Used by
benches/flood.sh (sipp's `-l 1` manages only a few hundred a second).

    b2b_client.py KIND LOCAL_IP LOCAL_PORT TARGET_IP TARGET_PORT SECONDS [ID]

KIND: options (OPTIONS to the node), overlay (a GetNeighbours query from DHT-PeerID ID, which
must be the ID LOCAL_IP:LOCAL_PORT derives), message (MESSAGE to sip:bob@p2p.test; register
LOCAL_PORT first). Prints JSON: answers by status code, lost (no answer in 2 s), rate.
"""
import json
import socket
import sys
import time

kind, lip, lport, tip, tport, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), float(sys.argv[6])
peer_id = sys.argv[7] if len(sys.argv) > 7 else ""
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((lip, lport))
s.settimeout(2.0)
target = (tip, tport)


def request(n):
    via = f"Via: SIP/2.0/UDP {lip}:{lport};branch=z9hG4bKb2b{n};rport\r\n"
    common = f"Call-ID: b2b{n}@{lip}\r\nMax-Forwards: 70\r\n"
    if kind == "options":
        return (f"OPTIONS sip:{tip}:{tport} SIP/2.0\r\n{via}From: <sip:flood@{lip}>;tag={n}\r\n"
                f"To: <sip:{tip}:{tport}>\r\n{common}CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    if kind == "overlay":
        return (f"REGISTER sip:{tip}:{tport} SIP/2.0\r\n{via}From: <sip:{peer_id}@{lip}:{lport}>;tag={n}\r\n"
                f"To: <sip:{tip}:{tport}>\r\n{common}CSeq: 1 REGISTER\r\nRequire: dht\r\n"
                f"DHT-PeerID: <sip:{peer_id}@{lip}:{lport}>;version=2;overlay=p2p.test\r\nContent-Length: 0\r\n\r\n")
    body = f"flood {n}"
    return (f"MESSAGE sip:bob@p2p.test SIP/2.0\r\n{via}From: <sip:alice@p2p.test>;tag={n}\r\n"
            f"To: <sip:bob@p2p.test>\r\n{common}CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}")


codes, lost, n = {}, 0, 0
end = time.monotonic() + secs
while time.monotonic() < end:
    n += 1
    s.sendto(request(n).encode(), target)
    want = f"b2b{n}@".encode()
    while True:
        try:
            data = s.recv(65535)
        except socket.timeout:
            lost += 1
            break
        if want not in data:
            continue  # a late answer to an earlier request
        code = int(data.split(b" ", 2)[1])
        if code >= 200:
            codes[code] = codes.get(code, 0) + 1
            break
print(json.dumps({"kind": kind, "sent": n, "answers": codes, "lost": lost, "per_second": round(n / secs)}))
