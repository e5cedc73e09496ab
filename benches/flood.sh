#!/usr/bin/env bash
# flood.sh [--secs N] [--rate R] [--clients N] [--rate-secs N]
#
# Issue 11 item 3: floods do not take the node down. One release node with the default
# configuration (max_server_transactions 20,000), on 127.0.0.171; sipp clients on
# 127.0.0.173-179.
#
# 1. One client, back to back (benches/b2b_client.py: never more than one request
#    outstanding), for --secs (60) each: OPTIONS to the overlay port, overlay queries (GetNeighbours, a REGISTER
#    with Require: dht from a DHT-PeerID that matches sipp's address), and MESSAGEs through the
#    proxy to a registered sipp phone that answers each with 200.
# 2. Many clients: --clients (4) sipp processes sending OPTIONS at --rate (10,000) per second
#    together for --rate-secs (20).
#
# For each phase: requests answered per second (sipp's successful calls over the phase), sipp's
# failed calls, and the 503s the node sent (its overload_rejected counter: the transaction
# bound and the load shedding together). The goal is 0 refused in every phase.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=60 RATE=10000 CLIENTS=4 RATE_SECS=20
while (($#)); do
  case $1 in
    --secs) SECS=$2 ;; --rate) RATE=$2 ;; --clients) CLIENTS=$2 ;; --rate-secs) RATE_SECS=$2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done

NODE_IP=127.0.0.171 CLIENT_IP=127.0.0.173 SIPP_BUFFER=4194304
WORK=$(mktemp -d /tmp/p2psip-flood.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n ${KEEP_WORK:-} ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log() { echo "[flood] $*" >&2; }

cargo build --release -q
BIN=$PWD/target/release/p2psip
mkdir -p "$WORK/data"
for u in alice bob; do
  echo secret | "$BIN" account add "sip:$u@p2p.test" --password-stdin --without-certificate --data-dir "$WORK/data" >/dev/null
done
printf '[registrar]\nping_interval_ms = 3600000\n' >"$WORK/node.toml"
"$BIN" node --config "$WORK/node.toml" --data-dir "$WORK/data" --listen "$NODE_IP:5070" --proxy "$NODE_IP:5060" \
  --http "$NODE_IP:5090" 2>"$WORK/node.log" &
PIDS+=("$!")
for _ in $(seq 1 100); do curl -sf "$NODE_IP:5090/status" >/dev/null && break; sleep 0.1; done

counter() { # NAME -> the node's counter
  curl -s --max-time 5 "$NODE_IP:5090/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['counters']['$1'])"
}

# sipp_run DIR ARGS... -> runs sipp in DIR with its screen log, returns its status
sipp_run() {
  local dir=$1
  shift
  mkdir -p "$dir"
  (cd "$dir" && sipp -nostdin -buff_size "$SIPP_BUFFER" -trace_screen "$@" >sipp.out 2>&1)
}

# calls DIR -> "successful failed" from sipp's final screen
calls() {
  local screen
  screen=$(cat "$1"/*_screen.log 2>/dev/null || true)
  local ok fail
  ok=$(grep -a "Successful call" <<<"$screen" | tail -1 | awk '{print $(NF)}')
  fail=$(grep -a "Failed call" <<<"$screen" | tail -1 | awk '{print $(NF)}')
  echo "${ok:-0} ${fail:-0}"
}

RESULTS=()
report() { # NAME DIRS SECONDS REJECTED_BEFORE
  local name=$1 dirs=$2 secs=$3 before=$4 ok=0 fail=0 d o f after
  for d in $dirs; do read -r o f < <(calls "$d"); ok=$((ok + o)); fail=$((fail + f)); done
  after=$(counter overload_rejected)
  RESULTS+=("| $name | $((ok / secs)) | $ok | $fail | $((after - before)) |")
  log "$name: $((ok / secs))/s answered, $ok ok, $fail failed, $((after - before)) refused with 503"
}

ROOT=$PWD
# b2b NAME KIND PORT TARGET_PORT [ID]: one client back to back (benches/b2b_client.py), for
# --secs; its answers by status and the node's 503s.
b2b() {
  local name=$1 kind=$2 port=$3 tport=$4 id=${5:-} before after out
  before=$(counter overload_rejected)
  out=$(python3 "$ROOT/benches/b2b_client.py" "$kind" "$CLIENT_IP" "$port" "$NODE_IP" "$tport" "$SECS" $id)
  after=$(counter overload_rejected)
  log "$name: $out; the node sent $((after - before)) 503s"
  RESULTS+=("| $name | $(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(r['per_second'], '|', r['answers'].get('200', 0), '|', r['sent'] - r['answers'].get('200', 0))" "$out") | $((after - before)) |")
}

# 1a. OPTIONS back to back.
b2b "OPTIONS, one client back to back" options 6000 5070

# 1b. Overlay queries back to back, from a DHT-PeerID that matches the client's address.
ID=$(python3 -c "
import hashlib, ipaddress
d = int.from_bytes(hashlib.sha1(ipaddress.ip_address('$CLIENT_IP').packed).digest(), 'big')
print('%040x' % ((d & ~((1 << 20) - 1)) | 6100))")
b2b "overlay queries, one client back to back" overlay 6100 5070 "$ID"

# 1c. MESSAGEs back to back through the proxy to bob's phone (a sipp that answers 200), from
# a port alice registered from.
REG=$ROOT/tests/sipp/register.xml
sipp_run "$WORK/bob-reg" -sf "$REG" -s bob -key domain p2p.test -au bob -ap secret -i "$CLIENT_IP" -p 7100 -m 1 \
  -timeout 10 -timeout_error "$NODE_IP:5060"
(cd "$WORK/bob-reg" && exec sipp -nostdin -buff_size "$SIPP_BUFFER" -sf "$ROOT/benches/sipp/message_uas.xml" \
  -i "$CLIENT_IP" -p 7100 "$NODE_IP:5060" >uas.out 2>&1) &
PIDS+=("$!")
sipp_run "$WORK/alice-reg" -sf "$REG" -s alice -key domain p2p.test -au alice -ap secret -i "$CLIENT_IP" -p 6200 -m 1 \
  -timeout 10 -timeout_error "$NODE_IP:5060"
b2b "MESSAGE, one client back to back" message 6200 5060

# 2. Many clients at --rate together.
before=$(counter overload_rejected)
dirs=""
per=$((RATE / CLIENTS))
for i in $(seq 1 "$CLIENTS"); do
  ip=127.0.0.$((173 + i))
  dirs+=" $WORK/many-$i"
  sipp_run "$WORK/many-$i" -sf "$ROOT/tests/sipp/options.xml" -i "$ip" -p 6300 -r "$per" -m $((per * RATE_SECS)) \
    -l $((per * 4)) -timeout $((RATE_SECS * 3))s "$NODE_IP:5070" &
done
wait_for_sipps() { local j; for j in $(jobs -p); do [[ " ${PIDS[*]} " == *" $j "* ]] || wait "$j" || true; done; }
wait_for_sipps
report "OPTIONS, $CLIENTS clients at $RATE/s" "$dirs" "$RATE_SECS" "$before"

echo
echo "| phase | requests per second | answered 200 | other answers or lost | 503s the node sent |"
echo "|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
echo "node RSS: $(awk '/VmRSS/ {print $2 " kB"}' /proc/"${PIDS[0]}"/status)"
