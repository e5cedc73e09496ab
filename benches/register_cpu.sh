#!/usr/bin/env bash
# register_cpu.sh - CPU per REGISTER transaction of one p2psip node at a fixed rate, and by
# instruction count (issue 5 item 7; the figures in docs/performance.md).
#
#   benches/register_cpu.sh [BIN] [RATE] [CALLS]          # defaults: target/release/p2psip 8000 64000
#   benches/register_cpu.sh --callgrind [BIN] [CALLS]     # default CALLS 1000, at 100/s
#
# Starts a fresh node as benches/proxy_vs_kamailio.sh does (account alice, pings off), runs
# sipp tests/sipp/register.xml (401 challenge + authenticated REGISTER: 2 transactions per
# call) and prints the node's utime + stime per transaction and its context switches per
# transaction. With --callgrind the node runs under valgrind's callgrind; its counters are
# zeroed just before sipp starts and dumped just after it ends, and the user-space
# instructions per transaction are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLGRIND=
if [[ ${1:-} == --callgrind ]]; then CALLGRIND=1; shift; fi
BIN=${1:-$PWD/target/release/p2psip}
if [[ -n $CALLGRIND ]]; then RATE=100 CALLS=${2:-1000}; else RATE=${2:-8000} CALLS=${3:-64000}; fi
IP=127.0.0.181 CLIENT_IP=127.0.0.183 PORT=6100 REG=$PWD/tests/sipp/register.xml
W=$(mktemp -d /tmp/register-cpu.XXXXXX)
NP=
cleanup() { if [[ -n $NP ]]; then kill "$NP" 2>/dev/null || true; wait "$NP" 2>/dev/null || true; fi; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/data"
echo secret | "$BIN" account add sip:alice@p2p.test --password-stdin --without-certificate --data-dir "$W/data" >/dev/null
printf '[registrar]\nping_interval_ms = 3600000\nmax_server_transactions = 100000\n' >"$W/node.toml"
NODE=("$BIN" node --config "$W/node.toml" --data-dir "$W/data" --listen "$IP:5070" --proxy "$IP:5060" --http "$IP:5090")
if [[ -n $CALLGRIND ]]; then
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "${NODE[@]}" 2>"$W/node.log" &
else
  "${NODE[@]}" 2>"$W/node.log" &
fi
NP=$!
for _ in $(seq 300); do ss -uln | grep -q "$IP:5060 " && break; sleep 0.1; done
ticks() { read -r -a f < <(sed 's/^.*) //' "/proc/$NP/stat"); echo $((f[11] + f[12])); }
switches() { cat /proc/"$NP"/task/*/status | awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s }'; }
[[ -n $CALLGRIND ]] && { sleep 1; callgrind_control -z "$NP" >/dev/null 2>&1; }
t0=$(ticks) s0=$(switches) rc=0
(cd "$W" && sipp -sf "$REG" -s alice -key domain p2p.test -au alice -ap secret \
  -i "$CLIENT_IP" -p "$PORT" -mp $((PORT + 20000)) -r "$RATE" -m "$CALLS" -l $((RATE * 4)) -nostdin \
  -timeout 120 -timeout_error "$IP:5060" >sipp.out 2>&1) || rc=$?
t1=$(ticks) s1=$(switches)
TX=$((CALLS * 2))
echo "sipp exit status: $rc (0: every call succeeded)"
if [[ -n $CALLGRIND ]]; then
  callgrind_control -d "$NP" >/dev/null 2>&1
  sleep 1
  dump=$(ls -t "$W"/cg.out.* | head -1)
  ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
  echo "instructions per transaction (user space): $((ir / TX))"
else
  awk -v t=$((t1 - t0)) -v k="$(getconf CLK_TCK)" -v n=$TX -v c=$((s1 - s0)) \
    'BEGIN { printf "CPU per transaction: %.1f us; context switches per transaction: %.2f\n", t / k * 1e6 / n, c / n }'
fi
