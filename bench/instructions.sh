#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind, for trousseau-proxy and for a
# plain nginx proxy_pass doing the same job: user space only, and the same from run to run
# (±0.1%), where a shared machine moves req/s and even CPU time by 10-30%. It measures what each
# front end's own code and libraries cost per request; the kernel's work (socket reads and writes,
# about the same for both) is not in it. Use it to tell whether a change to the request path costs
# or saves, then bench/run.sh for what that means in requests per second.
#
#   bench/instructions.sh                      # HTTP/1.1 and HTTP/2, the release build and nginx
#   PROXY_BIN=/tmp/old/trousseau-proxy bench/instructions.sh
#   REQUESTS=8000 PROTOCOLS=h2 NGINX_ROWS=0 bench/instructions.sh
#
# What runs, on 127.0.0.1, stopped at exit: an nginx app answering a small body; in front of it,
# under callgrind (about 50 times slower: the load is a fixed number of requests, not a duration),
# `trousseau-proxy dev` (a session signed in through the dev IdP like a browser: an authenticated
# GET, identity headers and signed assertion, an access line), then nginx proxy_pass with upstream
# keep-alive and an access line (one worker process, as callgrind follows one process). 1,000
# requests warm up (cookie opened, assertion minted, app connections made); the counters are
# zeroed; REQUESTS (4,000) GETs from 16 connections (h2load: `--h1` for HTTP/1.1, prior knowledge
# for HTTP/2) are counted, and the total is divided by them.
#
# Prints a line per front end and protocol: "trousseau-proxy h1: 61440 instructions per request".
# Needs valgrind, nginx, h2load (nghttp2-client) and curl: installed from Debian when missing (as
# root). BENCH_PORT (18090: uses 18090-18091) moves the ports; KEEP=1 keeps the callgrind output
# (for callgrind_annotate) and the logs.
set -euo pipefail

REQUESTS=${REQUESTS:-4000}
PROTOCOLS=${PROTOCOLS:-h1 h2}
NGINX_ROWS=${NGINX_ROWS:-1}
BASE=${BENCH_PORT:-18090}
UP_PORT=$BASE FRONT_PORT=$((BASE + 1))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/trousseau-proxy}
SIGNIN_BIN=$ROOT/target/release/examples/bench_signin

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_tools valgrind:valgrind nginx:nginx h2load:nghttp2-client curl:curl
ports_free "$UP_PORT" "$FRONT_PORT"
build_release --bin trousseau-proxy --example bench_signin
work_dir instructions
app_nginx "$UP_PORT"
wait_for "http://127.0.0.1:$UP_PORT/"

# count NAME PROTOCOL READY_URL COMMAND… — starts COMMAND under callgrind, loads it, prints the line.
count() {
  local name=$1 protocol=$2 ready=$3 out front dump total
  shift 3
  out="$WORK/callgrind-$name-$protocol.out"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" 2>"$WORK/$name-$protocol.log" &
  front=$!
  PIDS+=($front)
  for _ in $(seq 1 300); do # valgrind starts slowly
    curl -fsS -o /dev/null "$ready" 2>/dev/null && break
    sleep 0.2
  done
  # nginx is sent the proxy's session cookie too: both front ends read the same bytes.
  if [ "$name" = trousseau-proxy ]; then COOKIE=$("$SIGNIN_BIN" cookie --proxy "http://127.0.0.1:$FRONT_PORT"); fi
  load() { # requests — h2load with the session's cookie; any answer but 2xx stops
    local args=(-n "$1" -c 16 -m 1 -H "Cookie: $COOKIE" -H "Accept: */*")
    [ "$protocol" = h1 ] && args+=(--h1)
    h2load "${args[@]}" "http://127.0.0.1:$FRONT_PORT/bench" >"$WORK/h2load.out"
    grep -q "^status codes: $1 2xx" "$WORK/h2load.out" || { cat "$WORK/h2load.out" >&2; say "not every answer was a 2xx"; exit 1; }
  }
  load 1000
  # Zeroed twice: callgrind takes a command at its next check, and a first one may land late.
  callgrind_control -z "$front" >/dev/null && sleep 1 && callgrind_control -z "$front" >/dev/null
  load "$REQUESTS"
  callgrind_control -d "$front" >/dev/null
  sleep 2
  kill "$front"
  wait "$front" 2>/dev/null || true
  dump=$(ls -t "$out".* | head -1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  awk -v f="$name" -v p="$protocol" -v t="$total" -v n="$REQUESTS" \
    'BEGIN { printf "%s %s: %d instructions per request (%d requests)\n", f, p, t / n, n }'
}

for protocol in $PROTOCOLS; do
  count trousseau-proxy "$protocol" "http://127.0.0.1:$FRONT_PORT/.trousseau/readyz" \
    "$PROXY_BIN" dev --upstream "http://127.0.0.1:$UP_PORT" --listen "127.0.0.1:$FRONT_PORT"
  if [ "$NGINX_ROWS" = 1 ]; then
    listen="127.0.0.1:$FRONT_PORT"
    [ "$protocol" = h2 ] && listen="$listen http2"
    cat >"$WORK/front.conf" <<EOF
worker_processes 1; master_process off; daemon off;
pid $WORK/front.pid;
error_log $WORK/front-error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $WORK/front-body; proxy_temp_path $WORK/front-proxy;
  fastcgi_temp_path $WORK/front-fastcgi; uwsgi_temp_path $WORK/front-uwsgi; scgi_temp_path $WORK/front-scgi;
  keepalive_requests 1000000;
  access_log $WORK/front-access.log;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 1000000; }
  server { listen $listen; location / {
    proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
EOF
    count nginx "$protocol" "http://127.0.0.1:$FRONT_PORT/" "$NGINX" -p "$WORK" -c "$WORK/front.conf"
  fi
done
