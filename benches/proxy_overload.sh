#!/usr/bin/env bash
# proxy_overload.sh [RATE] [SECS] - issue 5 item 8: one release node with the default
# [registrar] limits (20,000 live server transactions) offered sipp REGISTERs (challenge +
# authenticated REGISTER) at RATE/s (default 1500) for SECS s (default 30): more than the
# bound can hold, since each authenticated REGISTER's transaction lives 64·T1 = 32 s over UDP.
# Prints the node's RSS, live server transactions, 503s and accepted REGISTERs every 5 s,
# while the transactions drain, and after a second sipp run at 200/s (the recovery).
# Needs a release build (cargo build --release) and sipp; uses 127.0.0.191 and .193.
set -u
cd "$(dirname "$0")/.."
RATE=${1:-1500} SECS=${2:-30}
W=$(mktemp -d); B=target/release/p2psip
echo secret | $B account add sip:alice@p2p.test --password-stdin --without-certificate --data-dir $W/data >/dev/null
$B node --data-dir $W/data --listen 127.0.0.191:5070 --proxy 127.0.0.191:5060 --http 127.0.0.191:5090 2>$W/node.log &
NODE=$!
sleep 1
rss() { awk '/VmRSS/ {print $2}' /proc/$NODE/status; }
st() { curl -s 127.0.0.191:5090/status | python3 -c 'import json,sys; s=json.load(sys.stdin); print("server_tx", s["transactions"]["server"], "503s", s["counters"]["overload_rejected"], "accepted", s["registrar"]["registers_accepted"])'; }
echo "start rss_kb $(rss)"
(cd $W && sipp -sf $PWD/tests/sipp/register.xml -s alice -key domain p2p.test -au alice -ap secret -i 127.0.0.193 -p 9000 -mp 29000 -r $RATE -m $((RATE*SECS)) -l $((RATE*4)) -nostdin -timeout $((SECS+30)) -timeout_error 127.0.0.191:5060 >$W/over.out 2>&1) &
SIPP=$!
for i in $(seq 1 $((SECS/5))); do sleep 5; echo "t=$((i*5))s rss_kb $(rss) $(st)"; done
wait $SIPP; echo "overload sipp exit $?"; grep -a "Successful call\|Failed call" $W/over.out | tail -2
for i in $(seq 1 8); do echo "drain t=+$((i*5))s rss_kb $(rss) $(st)"; sleep 5; done
(cd $W && sipp -sf $PWD/tests/sipp/register.xml -s alice -key domain p2p.test -au alice -ap secret -i 127.0.0.193 -p 9002 -mp 29002 -r 200 -m 2000 -nostdin -timeout 40 -timeout_error 127.0.0.191:5060 >$W/after.out 2>&1)
echo "after: sipp exit $? rss_kb $(rss) $(st)"; grep -a "Successful call\|Failed call" $W/after.out | tail -2
kill $NODE; wait $NODE 2>/dev/null; rm -rf $W
