#!/usr/bin/env bash
# The proxy's own footprint, as a sidecar pays it: resident memory and CPU time at a fixed request
# rate, on the production path — `trousseau-proxy --config config.example.yaml`, no IdP in the
# process — with the dev IdP and demo app beside it (`dev --idp-only`), a signed-in session, and
# `h2load --h1` holding each rate for 10 s. Uses ports 4180-4182; release build in target/release
# (bench/run.sh builds it, or: cargo build --release --bin trousseau-proxy --example bench_signin).
#
#   bench/footprint.sh          # prints idle and peak RSS, CPU per second at 1,000 and 5,000 req/s
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${PROXY_BIN:-$ROOT/target/release/trousseau-proxy}
SIGNIN=$ROOT/target/release/examples/bench_signin
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_tools h2load:nghttp2-client wrk:wrk curl:curl
ports_free 4180 4181 4182
cd "$ROOT"
"$BIN" dev --idp-only >/dev/null 2>&1 &
IDP=$!
sleep 1
"$BIN" --config config.example.yaml >/dev/null 2>&1 &
P=$!
trap 'kill $P $IDP 2>/dev/null; wait 2>/dev/null' EXIT
wait_for http://127.0.0.1:4180/.trousseau/readyz
idle=$(awk '/VmRSS/ { print $2 }' "/proc/$P/status")
COOKIE=$("$SIGNIN" cookie --proxy http://127.0.0.1:4180)
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_us() { awk -v t="$TICK_US" '{ printf "%d", ($14 + $15) * t }' "/proc/$P/stat"; }
echo "idle and ready: RSS $((idle / 1024)) MB"
for rate in 1000 5000; do
  before=$(cpu_us)
  h2load --h1 -c10 --rps=$((rate / 10)) -D 10 -H "Cookie: $COOKIE" http://127.0.0.1:4180/ | grep -E "^status codes"
  after=$(cpu_us)
  echo "$rate requests/s: $(awk -v c=$((after - before)) 'BEGIN { printf "%.2f", c / 10 / 1000000 }') of a core, RSS $(($(awk '/VmRSS/ { print $2 }' "/proc/$P/status") / 1024)) MB"
done
before=$(cpu_us)
out=$(wrk -t2 -c64 -d10s -H "Cookie: $COOKIE" http://127.0.0.1:4180/)
after=$(cpu_us)
requests=$(awk '/requests in/ { print $1 }' <<<"$out")
echo "saturated (64 connections): $(awk '/Requests\/sec/ { print $2 }' <<<"$out") requests/s, $(((after - before) / requests)) µs of CPU a request"
echo "peak RSS: $(($(awk '/VmHWM/ { print $2 }' "/proc/$P/status") / 1024)) MB"
