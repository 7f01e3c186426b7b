#!/usr/bin/env bash
# trousseau-proxy next to a plain nginx proxy_pass, on this machine, measured side by side.
#
#   bench/run.sh                       # build release, run everything (~4 minutes), print the table
#   ROUNDS=9 DURATION=20s bench/run.sh
#
# What runs, all on 127.0.0.1 and stopped at exit:
#   upstream  nginx answering a small text body (the app), one worker
#   floor     nginx proxy_pass with upstream keep-alive, no auth: the floor we compare against
#   proxy     trousseau-proxy dev --upstream <upstream>: the embedded dev IdP, a real session cookie
#   refresh   the same with --access-token-ttl 0s: every access token is already due for refresh
# Both front ends write an access log line per request (nginx's default `combined` log, the proxy's
# default `info` log), both to a file: that is how they run in production.
#
# Rows: authenticated GET three ways — HTTP/1.1 at CONNECTIONS and at MANY_CONNECTIONS keep-alive
# connections (wrk), and HTTP/2 with prior knowledge (h2load, CONNECTIONS connections of
# H2_STREAMS streams each) — each alternating floor and proxy for ROUNDS rounds: medians, and the
# median of each round's proxy/nginx ratio, which resists other load on the machine best; plus the
# CPU time each front end spent per request — user + system, all its threads or worker processes —
# which other load on the machine moves far less than req/s), 401 for an API client without a session, refreshes (each request of a session due for
# refresh, measured by the helper, and wrk with a cookie jar so refreshes are shared by in-flight
# requests), cold sign-ins (whole flow, callback latency), then the proxy's peak RSS.
#
# Environment: ROUNDS (5), DURATION (10s), CONNECTIONS (64), MANY_CONNECTIONS (1000), H2_STREAMS (1),
# THREADS (2), BENCH_PORT (18080: uses 18080-18084), SKIP_BUILD=1 to reuse target/release, PROXY_BIN to measure another build of the
# proxy (before/after comparisons), KEEP=1 to keep the work directory (logs).
#
# OTLP=1: the proxy under test exports every request's spans (sampling 1.0, `--otlp-endpoint`) to
# a local receiver (`bench_signin sink`, decoding each export as a collector does); the spans
# received are printed at the end. With BASELINE_BIN set to the same build, that is the cost of
# tracing: OTLP=1 BASELINE_BIN=target/release/trousseau-proxy SKIP_BUILD=1 bench/run.sh
#
# BASELINE_BIN=path: the floor is that build of trousseau-proxy (`dev`, signed in the same way)
# instead of nginx — an old and a new build side by side in one run, each round back to back:
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bin trousseau-proxy)
#   BASELINE_BIN=/tmp/old/target/release/trousseau-proxy bench/run.sh
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
MANY_CONNECTIONS=${MANY_CONNECTIONS:-1000}
H2_STREAMS=${H2_STREAMS:-1}
THREADS=${THREADS:-2}
BASE=${BENCH_PORT:-18080}
UP_PORT=$BASE FLOOR_PORT=$((BASE + 1)) PROXY_PORT=$((BASE + 2)) REFRESH_PORT=$((BASE + 3)) FLOOR_H2_PORT=$((BASE + 4)) SINK_PORT=$((BASE + 5))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/trousseau-proxy}
SIGNIN_BIN=$ROOT/target/release/examples/bench_signin

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_tools nginx:nginx wrk:wrk h2load:nghttp2-client curl:curl
if [ -n "${BASELINE_BIN:-}" ]; then
  FLOOR_NAME="baseline build"
  FLOOR_H2_PORT=$FLOOR_PORT # the proxy serves HTTP/2 with prior knowledge on its one listener
else
  FLOOR_NAME="nginx proxy_pass"
fi

ports_free "$UP_PORT" "$FLOOR_PORT" "$PROXY_PORT" "$REFRESH_PORT" "$FLOOR_H2_PORT" "$SINK_PORT"
build_release --bin trousseau-proxy --example bench_signin

# --- processes --------------------------------------------------------------------------------
work_dir bench

app_nginx "$UP_PORT"
# backlog=4096 on the floor too (see app_nginx); the proxy's listener queue is 1,024 (tokio's).
# keepalive 256: idle app connections kept per worker, as the proxy keeps.
if [ -n "${BASELINE_BIN:-}" ]; then
  "$BASELINE_BIN" dev --upstream "http://127.0.0.1:$UP_PORT" --listen "127.0.0.1:$FLOOR_PORT" 2>"$WORK/baseline.log" &
  BASELINE_PID=$!
  PIDS+=($BASELINE_PID)
else
nginx_conf floor auto "access_log $WORK/floor-access.log;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$FLOOR_PORT backlog=4096; location / {
    proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }
  server { listen 127.0.0.1:$FLOOR_H2_PORT http2 backlog=4096; location / {
    proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
fi

PROXY_TRACE_ARGS=()
if [ "${OTLP:-0}" = 1 ]; then
  "$SIGNIN_BIN" sink --listen "127.0.0.1:$SINK_PORT" >"$WORK/sink.out" &
  PIDS+=($!)
  PROXY_TRACE_ARGS=(--otlp-endpoint "http://127.0.0.1:$SINK_PORT")
fi
"$PROXY_BIN" dev --upstream "http://127.0.0.1:$UP_PORT" --listen "127.0.0.1:$PROXY_PORT" "${PROXY_TRACE_ARGS[@]}" 2>"$WORK/proxy.log" &
PROXY_PID=$!
PIDS+=($PROXY_PID)
"$PROXY_BIN" dev --upstream "http://127.0.0.1:$UP_PORT" --listen "127.0.0.1:$REFRESH_PORT" --access-token-ttl 0s 2>"$WORK/refresh.log" &
PIDS+=($!)

wait_for "http://127.0.0.1:$UP_PORT/"
if [ -n "${BASELINE_BIN:-}" ]; then wait_for "http://127.0.0.1:$FLOOR_PORT/.trousseau/readyz"; else wait_for "http://127.0.0.1:$FLOOR_PORT/"; fi
wait_for "http://127.0.0.1:$PROXY_PORT/.trousseau/readyz"
wait_for "http://127.0.0.1:$REFRESH_PORT/.trousseau/readyz"

# A real session, signed in through the dev IdP like a browser.
COOKIE=$("$SIGNIN_BIN" cookie --proxy "http://127.0.0.1:$PROXY_PORT")
REFRESH_COOKIE=$("$SIGNIN_BIN" cookie --proxy "http://127.0.0.1:$REFRESH_PORT")

# --- wrk --------------------------------------------------------------------------------------
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), summary.errors.status, errors))
end
EOF
# A cookie jar per wrk thread: every Set-Cookie replaces the session cookie the thread sends.
cat >"$WORK/jar.lua" <<'EOF'
local cookie = os.getenv("BENCH_COOKIE")
request = function()
  return wrk.format("GET", "/bench", { ["Cookie"] = cookie, ["Accept"] = "application/json" })
end
response = function(status, headers, body)
  local set = headers["Set-Cookie"] or headers["set-cookie"]
  if set then cookie = set:match("^([^;]+)") end
end
EOF
cat "$WORK/report.lua" >>"$WORK/jar.lua"

run_wrk() { # url [wrk args…] — prints "rps p50_us p99_us non2xx errors requests"
  local url=$1
  shift
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/report.lua" "$@" "$url" >"$WORK/wrk.out"
  awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
       print v["rps"], v["p50_us"], v["p99_us"], v["non2xx"], v["errors"], v["requests"] }' "$WORK/wrk.out"
}

# HTTP/2 with prior knowledge: h2load's summary, and the percentiles from its per-request log.
run_h2load() { # url [h2load args…] — the same fields as run_wrk
  local url=$1
  shift
  h2load -t"$THREADS" -c"$CONNECTIONS" -m"$H2_STREAMS" -D "$DURATION" --log-file "$WORK/h2.log" "$@" "$url" >"$WORK/h2.out"
  local rps total failed bad
  rps=$(awk '/^finished in/ { print $4 }' "$WORK/h2.out")
  read -r total failed <<<"$(awk '/^requests:/ { print $2, $10 + $12 + $14 }' "$WORK/h2.out")"
  bad=$(awk '/^status codes:/ { print $5 + $7 + $9 }' "$WORK/h2.out")
  sort -n -k3,3 "$WORK/h2.log" | awk -v rps="$rps" -v bad="$bad" -v err="$failed" -v n="$total" \
    '{ v[NR] = $3 } END { print rps, v[int(NR * 0.50) + 1], v[int(NR * 0.99) + 1], bad, err, n }'
}

# CPU time (user + system) of processes, in microseconds: all threads of each process count.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_us() { # pid…
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo $((total * TICK_US))
}
AUTH_HEADERS=(-H "Cookie: $COOKIE" -H "Accept: */*")
if [ -n "${BASELINE_BIN:-}" ]; then
  FLOOR_WORKERS=$BASELINE_PID
  FLOOR_HEADERS=(-H "Cookie: $("$SIGNIN_BIN" cookie --proxy "http://127.0.0.1:$FLOOR_PORT")" -H "Accept: */*")
else
  FLOOR_MASTER=$(cat "$WORK/floor.pid")
  FLOOR_WORKERS=$(pgrep -P "$FLOOR_MASTER" | tr '\n' ' ')
  FLOOR_HEADERS=("${AUTH_HEADERS[@]}") # nginx ignores the cookie; both sides send the same bytes
fi
say "warming up…"
DURATION=2s run_wrk "http://127.0.0.1:$FLOOR_PORT/bench" "${FLOOR_HEADERS[@]}" >/dev/null
DURATION=2s run_wrk "http://127.0.0.1:$PROXY_PORT/bench" "${AUTH_HEADERS[@]}" >/dev/null

# compare NAME CONNECTIONS RUNNER FLOOR_URL PROXY_URL: ROUNDS rounds, each nginx then the proxy
# back to back. Rows (rps p50 p99 non2xx errors requests cpu_us_per_request) in $WORK/NAME.floor
# and NAME.proxy, each round's proxy/nginx ratios of req/s and p99 in NAME.ratio.
compare() {
  local name=$1 conns=$2 runner=$3 floor_url=$4 proxy_url=$5 round before floor proxy floor_cpu proxy_cpu
  local frps fp99 fbad ferr freq prps pp99 pbad perr preq
  : >"$WORK/$name.floor"
  : >"$WORK/$name.proxy"
  : >"$WORK/$name.ratio"
  for round in $(seq 1 "$ROUNDS"); do
    # shellcheck disable=SC2086 # a list of pids
    before=$(cpu_us $FLOOR_WORKERS)
    floor=$(CONNECTIONS=$conns "$runner" "$floor_url" "${FLOOR_HEADERS[@]}")
    # shellcheck disable=SC2086
    floor_cpu=$(($(cpu_us $FLOOR_WORKERS) - before))
    before=$(cpu_us "$PROXY_PID")
    proxy=$(CONNECTIONS=$conns "$runner" "$proxy_url" "${AUTH_HEADERS[@]}")
    proxy_cpu=$(($(cpu_us "$PROXY_PID") - before))
    read -r frps _ fp99 fbad ferr freq <<<"$floor"
    read -r prps _ pp99 pbad perr preq <<<"$proxy"
    echo "$floor $(awk -v c="$floor_cpu" -v n="$freq" 'BEGIN { printf "%.1f", c / n }')" >>"$WORK/$name.floor"
    echo "$proxy $(awk -v c="$proxy_cpu" -v n="$preq" 'BEGIN { printf "%.1f", c / n }')" >>"$WORK/$name.proxy"
    # Each round's pair runs back to back: their ratio is steadier than a ratio of medians when the
    # machine's other load drifts.
    awk -v a="$prps" -v b="$frps" -v c="$pp99" -v d="$fp99" 'BEGIN { print a / b, c / d }' >>"$WORK/$name.ratio"
    say "$name round $round: $FLOOR_NAME $frps req/s (p99 ${fp99}us, $(tail -1 "$WORK/$name.floor" | awk '{ print $7 }') µs CPU/req) · trousseau-proxy $prps req/s (p99 ${pp99}us, $(tail -1 "$WORK/$name.proxy" | awk '{ print $7 }') µs CPU/req) · $(tail -1 "$WORK/$name.ratio" | awk '{ printf "%.2f× req/s, %.2f× p99", $1, $2 }')"
    if [ "$fbad" != 0 ] || [ "$pbad" != 0 ] || [ "$ferr" != 0 ] || [ "$perr" != 0 ]; then
      say "unexpected answers: $FLOOR_NAME non-2xx $fbad errors $ferr, trousseau-proxy non-2xx $pbad errors $perr"
      exit 1
    fi
  done
}
compare h1 "$CONNECTIONS" run_wrk "http://127.0.0.1:$FLOOR_PORT/bench" "http://127.0.0.1:$PROXY_PORT/bench"
compare many "$MANY_CONNECTIONS" run_wrk "http://127.0.0.1:$FLOOR_PORT/bench" "http://127.0.0.1:$PROXY_PORT/bench"
compare h2 "$CONNECTIONS" run_h2load "http://127.0.0.1:$FLOOR_H2_PORT/bench" "http://127.0.0.1:$PROXY_PORT/bench"

say "401 for an API client without a session…"
unauth=$(run_wrk "http://127.0.0.1:$PROXY_PORT/api/items" -H "Accept: application/json")
read -r _ _ _ ubad _ ureq <<<"$unauth"
[ "$ubad" = "$ureq" ] || { say "expected only 401s, got $ubad non-2xx of $ureq"; exit 1; }

say "refreshes…"
refreshes_before=$(grep -c "session refreshed" "$WORK/refresh.log" || true)
jar=$(BENCH_COOKIE="$REFRESH_COOKIE" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/jar.lua" \
  "http://127.0.0.1:$REFRESH_PORT/bench" | awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
       print v["rps"], v["p50_us"], v["p99_us"], v["non2xx"], v["errors"], v["requests"] }')
refreshes=$(($(grep -c "session refreshed" "$WORK/refresh.log" || true) - refreshes_before))
per_request=$("$SIGNIN_BIN" refresh --proxy "http://127.0.0.1:$REFRESH_PORT" --count 400 --concurrency 4)

say "cold sign-ins…"
cold=$("$SIGNIN_BIN" cold --proxy "http://127.0.0.1:$PROXY_PORT" --count 300 --concurrency 4)

rss_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$PROXY_PID/status")

# --- table ------------------------------------------------------------------------------------
column_median() { # column file
  sort -n -k"$1","$1" "$2" | awk -v c="$1" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}
helper_field() { # key line
  tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'
}
row() { # label rps p50_us p99_us note
  awk -v l="$1" -v r="$2" -v a="$3" -v b="$4" -v n="$5" 'BEGIN {
    printf "| %-50s | %8.0f | %8.2f ms | %8.2f ms | %s |\n", l, r, a / 1000, b / 1000, n }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
pair() { # name label — the floor's row and the proxy's, medians of the rounds
  local f="$WORK/$1.floor" p="$WORK/$1.proxy" r="$WORK/$1.ratio" f_cpu p_cpu
  f_cpu=$(column_median 7 "$f") p_cpu=$(column_median 7 "$p")
  row "$FLOOR_NAME, $2" "$(column_median 1 "$f")" "$(column_median 2 "$f")" "$(column_median 3 "$f")" "1.00×; CPU ${f_cpu} µs/request"
  row "trousseau-proxy, $2" "$(column_median 1 "$p")" "$(column_median 2 "$p")" "$(column_median 3 "$p")" \
    "$(column_median 1 "$r" | awk '{ printf "%.2f×", $1 }') req/s, $(column_median 2 "$r" | awk '{ printf "%.2f×", $1 }') p99 (median of the rounds' ratios); CPU ${p_cpu} µs/request ($(ratio "$p_cpu" "$f_cpu"))"
}
f_rps=$(column_median 1 "$WORK/h1.floor")

echo
echo "trousseau-proxy next to ${BASELINE_BIN:-nginx proxy_pass (upstream keep-alive)} (the floor): $(nproc) cores ($(uname -m)), $THREADS client threads, $DURATION per run, median of $ROUNDS alternating rounds"
echo
echo "| scenario                                           |    req/s |         p50 |         p99 | compared with nginx |"
echo "|----------------------------------------------------|----------|-------------|-------------|---------------------|"
pair h1 "authenticated GET, $CONNECTIONS conns"
pair many "$MANY_CONNECTIONS keep-alive conns"
pair h2 "HTTP/2 (h2c), $CONNECTIONS conns × $H2_STREAMS"
read -r u_rps u_p50 u_p99 _ <<<"$unauth"
row "trousseau-proxy, 401 to an API client (no session)" "$u_rps" "$u_p50" "$u_p99" "$(ratio "$u_rps" "$f_rps") req/s"
read -r j_rps j_p50 j_p99 _ _ j_req <<<"$jar"
row "token due: one refresh shared by in-flight requests" "$j_rps" "$j_p50" "$j_p99" \
  "$refreshes refreshes in $j_req requests"
row "refresh on every request (4 sessions, helper)" "$(helper_field rate "$per_request")" \
  "$(helper_field p50_us "$per_request")" "$(helper_field p99_us "$per_request")" "each request waits for its refresh"
row "cold sign-in, whole flow (4 at a time, helper)" "$(helper_field rate "$cold")" \
  "$(helper_field p50_us "$cold")" "$(helper_field p99_us "$cold")" "sign-ins/s; latency: the callback alone"
echo
if [ "${OTLP:-0}" = 1 ]; then
  sleep 2
  echo "spans received by the OTLP sink from trousseau-proxy: $(tail -1 "$WORK/sink.out" | awk '{ print $2 }')"
fi
awk -v p="$rss_kb" 'BEGIN { printf "peak RSS of trousseau-proxy (VmHWM, dev mode: the embedded IdP included): %.1f MB\n", p / 1024 }'
