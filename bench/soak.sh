#!/usr/bin/env bash
# Endurance ("soak") run of trousseau-proxy: a compressed day of signed-in traffic, once with the
# cookie session store and once with Redis, each ending in a verdict.
#
#   bench/soak.sh                                  # build release, 2 × 30 minutes, 300 browsers
#   MINUTES=3 USERS=40 OUTAGE_SECONDS=20 bench/soak.sh  # a short check
#   bench/soak.sh --churn-seconds 60               # extra options go to the driver (examples/soak.rs)
#
# What runs, all on 127.0.0.1 and stopped at exit (see examples/soak.rs for the details):
#   driver   examples/soak.rs: the dev IdP (10 s access tokens, rotating refresh tokens, back-channel
#            logout), the app (JSON, websocket echo, one event a second), USERS virtual browsers that
#            browse, hold websockets and event streams, sign out, switch organization and get logged
#            out by the IdP; the IdP is down for OUTAGE_SECONDS halfway
#   proxy    target/release/trousseau-proxy as a child of the driver, configured by a YAML file
#   redis    /usr/bin/redis-server for the second run: a free loopback port, a password, no
#            persistence; the proxy reads its URL from a file (session.redis_url_file)
# Every REPORT_SECONDS a table row (request rate, errors, refreshes, reuse, sessions, connections,
# RSS, descriptors); at the end of each run a summary and a line `VERDICT store=… PASS|FAIL`.
# The verdict fails on any unexpected error, any refresh-token reuse detected by the IdP, any request
# of a revoked session that is served, or RSS or descriptors drifting more than ±10% after warm-up.
# The exit status is non-zero if either run fails.
#
# Environment: MINUTES (30, per store), USERS (300), OUTAGE_SECONDS (60), REPORT_SECONDS (30),
# STORES ("cookie redis"), SKIP_BUILD=1 to reuse target/release, PROXY_BIN to soak another build,
# REDIS_SERVER (/usr/bin/redis-server), KEEP=1 to keep the work directory (configs, proxy logs).
# Not part of `cargo test`: no test depends on timing.
set -euo pipefail

MINUTES=${MINUTES:-30}
USERS=${USERS:-300}
OUTAGE_SECONDS=${OUTAGE_SECONDS:-60}
REPORT_SECONDS=${REPORT_SECONDS:-30}
STORES=${STORES:-cookie redis}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/trousseau-proxy}
SOAK_BIN=$ROOT/target/release/examples/soak
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}

say() { printf '%s\n' "$*" >&2; }

for store in $STORES; do
  case $store in
    cookie | memory) ;;
    redis)
      if [ ! -x "$REDIS_SERVER" ]; then
        say "missing: $REDIS_SERVER — install it (sudo apt-get install redis-server), set REDIS_SERVER, or run STORES=cookie"
        exit 1
      fi
      ;;
    *)
      say "STORES: cookie, memory or redis, got $store"
      exit 1
      ;;
  esac
done

if [ "${SKIP_BUILD:-}" != 1 ]; then
  say "building release (trousseau-proxy and the soak driver)…"
  (cd "$ROOT" && cargo build --release --quiet --bin trousseau-proxy --example soak)
fi

# A few hundred browsers, each with its connections, websockets and event streams, on both ends of
# the loopback: more descriptors than the usual soft limit of 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d /tmp/trousseau-soak.XXXXXX)
REDIS_PID=
cleanup() {
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  if [ "${KEEP:-}" = 1 ]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Answers PONG once Redis accepts our password (bash's /dev/tcp: redis-cli is not required).
redis_ping() { # port password
  local reply
  reply=$(exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1" && printf 'AUTH %s\r\nPING\r\n' "$2" >&3 && timeout 2 head -c 12 <&3) || return 1
  [[ $reply == *PONG* ]]
}

start_redis() { # dir — sets REDIS_PID and writes dir/redis-url
  local dir=$1 password port attempt
  password=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')
  for attempt in $(seq 1 20); do
    port=$((20000 + RANDOM % 20000))
    port_free "$port" || continue
    "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --requirepass "$password" \
      --dir "$dir" --loglevel warning --logfile "$dir/redis.log" &
    REDIS_PID=$!
    for _ in $(seq 1 50); do
      if redis_ping "$port" "$password"; then
        # The password goes to the proxy and the driver in a file, never on a command line.
        (umask 077 && printf 'redis://:%s@127.0.0.1:%s/0\n' "$password" "$port" >"$dir/redis-url")
        say "redis-server on 127.0.0.1:$port (pid $REDIS_PID, no persistence)"
        return 0
      fi
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
    say "redis-server did not come up on port $port (attempt $attempt); trying another port"
  done
  say "could not start redis-server"
  return 1
}

stop_redis() {
  if [ -n "$REDIS_PID" ]; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
  fi
}

VERDICTS=()
failed=0
for store in $STORES; do
  dir="$WORK/$store"
  mkdir -p "$dir"
  args=(--proxy-bin "$PROXY_BIN" --store "$store" --minutes "$MINUTES" --users "$USERS"
    --outage-seconds "$OUTAGE_SECONDS" --report-seconds "$REPORT_SECONDS" --work-dir "$dir")
  if [ "$store" = redis ]; then
    start_redis "$dir"
    args+=(--redis-url-file "$dir/redis-url")
  fi
  say ""
  say "=== soak: session.store $store, $USERS browsers, $MINUTES min ==="
  status=0
  "$SOAK_BIN" "${args[@]}" "$@" | tee "$dir/report.txt" || status=$?
  stop_redis
  verdict=$(grep '^VERDICT' "$dir/report.txt" | tail -1 || true)
  [ -n "$verdict" ] || verdict="VERDICT store=$store FAIL (the driver exited with status $status before a verdict)"
  VERDICTS+=("$verdict")
  if [ "$status" != 0 ]; then failed=1; fi
done

echo
echo "soak verdicts ($MINUTES min per store, $USERS browsers):"
for v in "${VERDICTS[@]}"; do echo "  $v"; done
exit "$failed"
