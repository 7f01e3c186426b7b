#!/usr/bin/env bash
# Live reload under load: the proxy reloads its configuration every second (the file rewritten
# with a changed rule, then SIGHUP) while wrk sends signed-in requests, next to the same load
# without reloads, alternating, on this machine.
#
#   bench/reload.sh                      # build release, run (~7 minutes), print the table
#   ROUNDS=5 DURATION=60s bench/reload.sh
#
# Goal (issue 19): 0 failed requests while reloading, and the request rate within 5% of the rate
# without reloads (the median of each round's ratio).
#
# Set-up: an nginx app on BENCH_PORT, `trousseau-proxy dev --idp-only` (the dev IdP on
# 127.0.0.1:4181, which registers the callback of 127.0.0.1:4180), and the proxy on 127.0.0.1:4180
# run with a configuration file (reloading needs one; `dev` has none), metrics on BENCH_PORT+1.
# The request measured is an authenticated GET (session cookie, identity headers, signed assertion)
# with `Accept: application/json`: a session lost in a reload would be a 401, counted as an error.
#
# Environment: ROUNDS (3), DURATION (60s), CONNECTIONS (64), THREADS (2), BENCH_PORT (18190: uses
# 18190-18191, and 4180-4182), SKIP_BUILD=1 to reuse target/release, KEEP=1 to keep the work directory.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-60s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
BASE=${BENCH_PORT:-18190}
UP_PORT=$BASE METRICS_PORT=$((BASE + 1)) PROXY_PORT=4180
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/trousseau-proxy}
SIGNIN_BIN=$ROOT/target/release/examples/bench_signin

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_tools nginx:nginx wrk:wrk curl:curl
ports_free "$UP_PORT" "$METRICS_PORT" 4180 4181 4182
build_release --bin trousseau-proxy --example bench_signin
work_dir reload

# --- processes ---------------------------------------------------------------------------------
app_nginx "$UP_PORT"

# Access tokens of an hour: the measured cookie is sent as signed in, for the whole run (past a
# 5-minute token, wrk — which keeps no cookie jar — would resend a refresh token Trousseau rotated,
# and reuse detection would rightly end the session: that is bench/run.sh's refresh row, not this).
"$PROXY_BIN" dev --idp-only --access-token-ttl 1h 2>"$WORK/idp.log" &
PIDS+=($!)

SECRET=$("$PROXY_BIN" keys generate | sed -n 2p)
"$PROXY_BIN" keys generate | sed -n '/BEGIN PRIVATE KEY/,/END PRIVATE KEY/p' >"$WORK/signing.pem"
write_config() { # generation — a changed public route each time: every reload changes something
  cat >"$WORK/proxy.yaml.new" <<EOF
listen: "127.0.0.1:$PROXY_PORT"
public_url: "http://127.0.0.1:$PROXY_PORT"
metrics_listen: "127.0.0.1:$METRICS_PORT"
upstream: "http://127.0.0.1:$UP_PORT"
oidc:
  issuer: "http://127.0.0.1:4181/application/o/dev/"
  client_id: "trousseau-proxy-dev"
  client_secret: "dev-only-client-secret-not-for-production"
  scopes: [openid, email, profile, "trousseau:context", "trousseau:organization"]
session:
  secrets: ["$SECRET"]
identity:
  signing_key_file: "$WORK/signing.pem"
routes:
  public: ["/healthz", "/generation-$1/*"]
limits:
  max_requests_per_client: 0
EOF
  mv "$WORK/proxy.yaml.new" "$WORK/proxy.yaml"
}
write_config 0
"$PROXY_BIN" --config "$WORK/proxy.yaml" 2>"$WORK/proxy.log" &
PROXY_PID=$!
PIDS+=($PROXY_PID)

wait_for "http://127.0.0.1:$UP_PORT/"
wait_for "http://127.0.0.1:$PROXY_PORT/.trousseau/readyz"
COOKIE=$("$SIGNIN_BIN" cookie --proxy "http://127.0.0.1:$PROXY_PORT")
status=$(curl -sS -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" -H "Accept: application/json" "http://127.0.0.1:$PROXY_PORT/bench")
[ "$status" = 200 ] || { say "the signed-in request answered $status"; exit 1; }

metric() { # name
  curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

# --- load --------------------------------------------------------------------------------------
wrk_report

run_wrk() { # duration — prints "rps p99_us errors requests"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$1" -s "$WORK/report.lua" -H "Cookie: $COOKIE" -H "Accept: application/json" \
    "http://127.0.0.1:$PROXY_PORT/bench" >"$WORK/wrk.out"
  tail -n 1 "$WORK/wrk.out"
}

GENERATION=0
reload_every_second() { # until killed
  while true; do
    sleep 1
    GENERATION=$((GENERATION + 1))
    write_config "$GENERATION"
    kill -HUP "$PROXY_PID"
  done
}

say "warming up, then $ROUNDS rounds of $DURATION without and with a reload every second"
run_wrk 3s >/dev/null
steady=() reloading=() ratios=() s_p99=() r_p99=() s_err=0 r_err=0 reloads=0
for round in $(seq 1 "$ROUNDS"); do
  read -r rps p99 err _ < <(run_wrk "$DURATION")
  steady+=("$rps") s_p99+=("$p99") s_err=$((s_err + err))
  before=$(metric trousseau_proxy_config_reloads_total)
  reload_every_second &
  RELOADER=$!
  read -r rrps rp99 rerr _ < <(run_wrk "$DURATION")
  kill "$RELOADER"; wait "$RELOADER" 2>/dev/null || true
  sleep 1
  after=$(metric trousseau_proxy_config_reloads_total)
  reloading+=("$rrps") r_p99+=("$rp99") r_err=$((r_err + rerr)) reloads=$((reloads + after - before))
  ratios+=("$(awk -v a="$rrps" -v b="$rps" 'BEGIN { printf "%.3f", a / b }')")
  say "round $round: steady $rps/s, reloading $rrps/s ($((after - before)) reloads), errors $err / $rerr"
done
failures=$(metric trousseau_proxy_config_reload_failures_total)

printf '\nLive reload under load, %s rounds of %s, %s connections, %s load threads, %s cores\n' "$ROUNDS" "$DURATION" "$CONNECTIONS" "$THREADS" "$(nproc)"
printf '%-22s %10s %10s %8s\n' row "req/s" "p99 (ms)" errors
printf '%-22s %10.0f %10.2f %8d\n' "no reloads" "$(printf '%s\n' "${steady[@]}" | median)" "$(printf '%s\n' "${s_p99[@]}" | median | awk '{ print $1 / 1000 }')" "$s_err"
printf '%-22s %10.0f %10.2f %8d\n' "a reload every second" "$(printf '%s\n' "${reloading[@]}" | median)" "$(printf '%s\n' "${r_p99[@]}" | median | awk '{ print $1 / 1000 }')" "$r_err"
printf 'median ratio (reloading / no reloads): %s; per round: %s\n' "$(printf '%s\n' "${ratios[@]}" | median)" "${ratios[*]}"
printf 'reloads put in force while loaded: %s; reloads refused: %s\n' "$reloads" "$failures"
