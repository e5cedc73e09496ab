#!/usr/bin/env bash
# proxy_overload.sh [--trial-secs N] [--start R] [--max R] [--steps N] [--over-secs N]
#                   [--max-server-transactions N] [--knee R] [--busy-percent P] [--pin]
#
# Issue 5 item 8: one release node offered twice its knee rate of REGISTERs.
#
# 1. The knee: sipp REGISTER trials (tests/sipp/register.xml: challenge, then authenticated
#    REGISTER) of --trial-secs (5) each; the rate doubles from --start (1000/s) until a trial
#    has a failed call, then bisects --steps (3) times (RFC 7502's search, short trials, the
#    method of benches/proxy_vs_kamailio.sh). The knee is the highest zero-failure rate.
#    --knee R skips the search and takes R as the knee. --busy-percent sets the node's
#    [registrar] overload_busy_percent (default 90; 0 turns the load shedding off, to compare).
#    --pin runs the node on CPU 0 and sipp on CPU 1 (taskset), so sipp has a core of its own.
#    A trial passes when every call was placed, none failed, and sipp's overall call rate
#    reached 90% of the rate offered (sipp places calls no faster than it can).
# 2. Overload: sipp at exactly 2 x knee for --over-secs (10). Every second the node's RSS,
#    live server transactions, REGISTERs accepted, 503s sent (and how many of them the load
#    shedding sent) and the admission control's busy/shed shares, from its status API.
# 3. Drain: waits until the live server transactions have ended (Timer J, 32 s); every knee
#    trial and the 2x phase also start only once the node holds no server transaction.
# 4. Recovery: a trial at the knee / 2; it must succeed 100%.
#
# The node runs with default [registrar] limits except OPTIONS pings off and
# max_server_transactions (default here 400000: at ~10,000 authenticated REGISTERs/s each
# server transaction lives 32 s, so the default 20,000 would be the limit after 2 s and the
# search would measure that bound, not the CPU). Needs sipp; uses 127.0.0.191 (node) and
# 127.0.0.193 (sipp). Prints a summary at the end; the per-second lines go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

TRIAL_SECS=5 START=1000 MAX=51200 STEPS=3 OVER_SECS=10 MAX_TX=400000 KNEE=0 BUSY=90 NODE_CPU=() SIPP_CPU=()
while (($#)); do
  case $1 in
    --trial-secs) TRIAL_SECS=$2 ;; --start) START=$2 ;; --max) MAX=$2 ;; --steps) STEPS=$2 ;;
    --over-secs) OVER_SECS=$2 ;; --max-server-transactions) MAX_TX=$2 ;; --knee) KNEE=$2 ;;
    --busy-percent) BUSY=$2 ;;
    --pin) NODE_CPU=(taskset -c 0) SIPP_CPU=(taskset -c 1); shift; continue ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done

NODE_IP=127.0.0.191 CLIENT_IP=127.0.0.193 PORT=5060
# sipp's socket buffers: with its default (64 KiB, doubled by Linux) sipp's own receive queue
# overflows from about 16,000 REGISTERs/s, and the client fails the calls (see
# benches/proxy_vs_kamailio.sh).
SIPP_BUFFER=4194304
WORK=$(mktemp -d /tmp/proxy-overload.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n ${KEEP_WORK:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log() { echo "[overload] $*" >&2; }

cargo build --release -q
BIN=$PWD/target/release/p2psip
REG=$PWD/tests/sipp/register.xml
mkdir -p "$WORK/data"
echo secret | "$BIN" account add sip:alice@p2p.test --password-stdin --without-certificate --data-dir "$WORK/data" >/dev/null
printf '[registrar]\nping_interval_ms = 3600000\nmax_server_transactions = %s\noverload_busy_percent = %s\n' \
  "$MAX_TX" "$BUSY" >"$WORK/node.toml"
"${NODE_CPU[@]}" "$BIN" node --config "$WORK/node.toml" --data-dir "$WORK/data" --listen "$NODE_IP:5070" \
  --proxy "$NODE_IP:$PORT" --http "$NODE_IP:5090" 2>"$WORK/node.log" &
NODE=$!
PIDS+=("$NODE")
for _ in $(seq 1 100); do curl -sf "$NODE_IP:5090/status" >/dev/null && break; sleep 0.1; done

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$NODE/status"; }
# accepted 503s shed server_tx busy% shed% queued%
sample() {
  curl -s --max-time 5 "$NODE_IP:5090/status" | python3 -c 'import json,sys
try: s=json.load(sys.stdin)
except ValueError: sys.exit("status API did not answer")
c=s["counters"]; l=s.get("load", {})
print(s["registrar"]["registers_accepted"], c["overload_rejected"], c.get("load_shed", 0),
      s["transactions"]["server"], l.get("busy_percent", -1), l.get("shed_percent", -1), l.get("queued_percent", -1))'
}

CLIENT_PORT=6000
# sipp REGISTER calls at RATE/s for SECS s into DIR; prints "successful failed sipp's-rate".
run_sipp() {
  local rate=$1 secs=$2 dir=$3 extra=${4:-}
  CLIENT_PORT=$((CLIENT_PORT + 2))
  mkdir -p "$dir"
  (cd "$dir" && "${SIPP_CPU[@]}" sipp -sf "$REG" -s alice -key domain p2p.test -au alice -ap secret \
    -i "$CLIENT_IP" -p "$CLIENT_PORT" -mp $((CLIENT_PORT + 20000)) -r "$rate" -m $((rate * secs)) -l $((rate * 4)) \
    -buff_size "$SIPP_BUFFER" -nostdin -timeout $((secs * 4 + 10)) -timeout_error -trace_stat -fd 1 $extra "$NODE_IP:$PORT" >sipp.out 2>&1) || true
  local ok fail achieved
  ok=$(grep -a "Successful call" "$dir/sipp.out" | tail -1 | awk '{print $NF}')
  fail=$(grep -a "Failed call" "$dir/sipp.out" | tail -1 | awk '{print $NF}')
  # sipp's overall call rate: it places calls no faster than it can.
  achieved=$(grep -a "Call Rate" "$dir/sipp.out" | tail -1 | awk '{print $(NF-1)}')
  echo "${ok:-0} ${fail:-0} ${achieved:-0}"
}

# Waits (up to 60 s) until the node holds no server transaction, so that every trial, and the
# 2x phase, starts from the same idle state rather than with the last trial's Timer J leftovers.
drain() {
  local tx
  for _ in $(seq 1 60); do
    read -r _ _ _ tx _ _ < <(sample)
    ((tx == 0)) && return
    sleep 1
  done
}

trial() {
  local out
  drain
  out=$(run_sipp "$1" "$TRIAL_SECS" "$WORK/trial-$1-$RANDOM")
  log "trial $1/s: successful/failed/sipp's rate $out"
  local ok fail achieved
  read -r ok fail achieved <<<"$out"
  [[ $fail == 0 && $ok -eq $(($1 * TRIAL_SECS)) ]] && awk -v a="$achieved" -v r="$1" 'BEGIN { exit !(a >= 0.9 * r) }'
}

lo=$KNEE hi=0 r=$START
while ((KNEE == 0 && r <= MAX)); do
  if trial "$r"; then lo=$r; r=$((r * 2)); else hi=$r; break; fi
done
if ((KNEE == 0 && hi > 0)); then
  for ((i = 0; i < STEPS; i++)); do
    mid=$(((lo + hi) / 2))
    ((mid > lo)) || break
    if trial "$mid"; then lo=$mid; else hi=$mid; fi
  done
fi
KNEE=$lo
((KNEE > 0)) || { log "no zero-failure rate found"; exit 1; }
OVER=$((KNEE * 2))
log "knee $KNEE/s; offering $OVER/s for $OVER_SECS s"

drain
read -r a0 r0 s0 _ _ _ < <(sample)
log "before: rss ${RSS0:=$(rss_mb)} MB"
run_sipp "$OVER" "$OVER_SECS" "$WORK/over" -trace_err >"$WORK/over.result" &
SIPP=$!
PIDS+=("$SIPP")
pa=$a0 pr=$r0 ps=$s0 peak=$RSS0 t=0
printf '%4s %8s %10s %10s %10s %10s %6s %6s %7s\n' t rss_mb accepted/s 503/s shed/s server_tx busy% shed% queued% >&2
while kill -0 "$SIPP" 2>/dev/null; do
  sleep 1; t=$((t + 1))
  a=
  read -r a rj sh tx busy shed queued < <(sample) || true
  [[ -n $a ]] || continue
  m=$(rss_mb)
  printf '%4s %8s %10s %10s %10s %10s %6s %6s %7s\n' "$t" "$m" $((a - pa)) $((rj - pr)) $((sh - ps)) "$tx" "$busy" "$shed" "$queued" >&2
  awk -v m="$m" -v p="$peak" 'BEGIN {exit !(m > p)}' && peak=$m
  if ((t == OVER_SECS)); then a_end=$a r_end=$rj s_end=$sh; fi
  pa=$a pr=$rj ps=$sh
done
wait "$SIPP" || true
read -r over_ok over_fail over_rate <"$WORK/over.result"
: "${a_end:=$pa}" "${r_end:=$pr}" "${s_end:=$ps}"
# sipp logs the 503s it did not expect (-trace_err): how many, and how many carry Retry-After.
got503=$(cat "$WORK"/over/*_errors.log 2>/dev/null | grep -a -c "SIP/2.0 503 " || true)
retry_after=$(cat "$WORK"/over/*_errors.log 2>/dev/null | grep -a -c "^Retry-After: " || true)
log "overload sipp: successful $over_ok failed $over_fail"

log "draining"
drain
read -r a1 r1 s1 tx1 _ shed1 _ < <(sample)
RSS_DRAINED=$(rss_mb)
REC=$((KNEE / 2))
rec=$(run_sipp "$REC" "$TRIAL_SECS" "$WORK/recovery")
read -r a2 r2 s2 _ _ _ < <(sample)
log "recovery $REC/s: successful/failed/sipp's rate $rec"

cat <<EOF
knee (highest zero-failure REGISTER rate, ${TRIAL_SECS}-s trials, or --knee): $KNEE/s
offered: $OVER/s for $OVER_SECS s (sipp: $over_ok successful, $over_fail failed; its overall call rate $over_rate/s)
during the ${OVER_SECS} s: REGISTERs accepted $((a_end - a0)) ($(((a_end - a0) / OVER_SECS))/s), 503s $((r_end - r0)) (load shedding $((s_end - s0)))
after sipp ended: REGISTERs accepted $((a1 - a0)) in all, 503s $((r1 - r0)) (load shedding $((s1 - s0)))
503s in sipp's error log: $got503, with Retry-After: $retry_after
RSS: before $RSS0 MB, peak $peak MB, after the drain $RSS_DRAINED MB (server transactions $tx1, shed share ${shed1}%)
recovery at $REC/s for $TRIAL_SECS s: sipp successful/failed/rate $rec; accepted $((a2 - a1)), 503s $((r2 - r1))
EOF
