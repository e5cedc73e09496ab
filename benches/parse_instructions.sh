#!/bin/sh
# B8 by instruction count (callgrind): instructions per message for each parser, mode and
# corpus. Repeatable on a loaded machine, unlike wall-clock time. Run from the crate root.
set -eu
cargo build -q --release --example parse_instructions
bin=target/release/examples/parse_instructions
rounds=${ROUNDS:-200}
ir() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 | sed -n 's/.*Collected : //p'; }
printf '| corpus | mode | p2psip | rsip 0.4 | rsipstack 0.7 | rsip / p2psip | rsipstack / p2psip |\n|---|---|---|---|---|---|---|\n'
for corpus in register invite_sdp rfc4475_valid rfc4475_common; do
  for mode in parse parse_read; do
    row=""
    for parser in p2psip rsip rsipstack; do
      n=$("$bin" "$parser" "$mode" "$corpus" 0)
      per=$(( ($(ir "$parser" "$mode" "$corpus" "$rounds") - $(ir "$parser" "$mode" "$corpus" 0)) / (rounds * n) ))
      row="$row $per"
    done
    set -- $row
    printf '| %s | %s | %s | %s | %s | %s× | %s× |\n' "$corpus" "$mode" "$1" "$2" "$3" \
      "$(echo "scale=1; $2 / $1" | bc)" "$(echo "scale=1; $3 / $1" | bc)"
  done
done
