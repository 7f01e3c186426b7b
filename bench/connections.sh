#!/usr/bin/env bash
# Many websockets open through one proxy; one user signs out; only that user's websockets close.
#
#   bench/connections.sh                    # build release, 10,000 websockets, print the figures
#   COUNT=9000 SKIP_BUILD=1 bench/connections.sh
#
# What runs, all on 127.0.0.1 and stopped at exit:
#   app      the open_connections example in `app` mode: a websocket echo
#   idp      trousseau-proxy dev --idp-only (127.0.0.1:4181, its demo app on 4182)
#   proxy    trousseau-proxy --config config.example.yaml (127.0.0.1:4180) with the app as upstream
#            and the request caps raised (every websocket is a request in flight until it closes;
#            4096 by default)
#   clients  the open_connections example in `clients` mode: COUNT websockets, LEAVING of them
#            with Jean Dupont's session, the rest with Hélène Lefèvre's and Sam Taylor's; then
#            Jean signs out, and it measures when each of his websockets got its close frame
#            (1008) and checks that every other websocket still echoes
# Prints the proxy's resident memory before and after opening them (per websocket), the time
# to open them, and the sign-out's reach.
#
# Each websocket holds two descriptors in the proxy (the browser's and the app's connection):
# COUNT needs an open-file limit above 2 × COUNT (`ulimit -Hn`); the proxy lowers
# limits.max_connections to fit the limit it has, and says so in its log.
#
# Environment: COUNT (10000), LEAVING (100), APP_PORT (18091), SKIP_BUILD=1, PROXY_BIN and CONFIG
# (another build and its configuration file, to compare), KEEP=1 to
# keep the work directory (logs). Ports 4180-4182 must be free (config.example.yaml's).
set -euo pipefail

COUNT=${COUNT:-10000}
LEAVING=${LEAVING:-100}
APP_PORT=${APP_PORT:-18091}
PROXY_PORT=4180
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/trousseau-proxy}
SIGNIN_BIN=$ROOT/target/release/examples/bench_signin
HELPER=$ROOT/target/release/examples/open_connections
JEAN=a1b2c3d4-e5f6-7890-abcd-ef1234567890
HELENE=3f6c2d1e-8a47-4b9e-9c21-5d7e8f90a1b2
SAM=7b1e9c4d-2f38-4a6b-8e5d-c0a9f1e2d3b4

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
build_release --bin trousseau-proxy --example bench_signin --example open_connections
limit=$(ulimit -Hn)
if [ "$limit" != unlimited ] && [ "$limit" -le $((2 * COUNT + 100)) ]; then
  say "note: the open-file limit is $limit; $COUNT websockets need about $((2 * COUNT + 100)) in the proxy (set COUNT lower)"
fi

work_dir connections

ulimit -n "$(ulimit -Hn)"
"$HELPER" app --listen "127.0.0.1:$APP_PORT" >"$WORK/app.log" 2>&1 &
PIDS+=($!)
"$PROXY_BIN" dev --idp-only 2>"$WORK/idp.log" &
PIDS+=($!)
wait_for "http://127.0.0.1:4181/application/o/dev/.well-known/openid-configuration"
TROUSSEAU_PROXY_UPSTREAM="http://127.0.0.1:$APP_PORT" \
TROUSSEAU_PROXY_LIMITS_MAX_CONNECTIONS=$((COUNT + 1000)) \
TROUSSEAU_PROXY_LIMITS_MAX_REQUESTS_IN_FLIGHT=$((COUNT + 1000)) \
TROUSSEAU_PROXY_LIMITS_MAX_REQUESTS_PER_CLIENT=0 \
  "$PROXY_BIN" --config "${CONFIG:-$ROOT/config.example.yaml}" 2>"$WORK/proxy.log" &
PROXY_PID=$!
PIDS+=($PROXY_PID)
wait_for "http://127.0.0.1:$PROXY_PORT/.trousseau/readyz"

proxy="http://127.0.0.1:$PROXY_PORT"
leaving=$("$SIGNIN_BIN" cookie --proxy "$proxy" --user "$JEAN")
helene=$("$SIGNIN_BIN" cookie --proxy "$proxy" --user "$HELENE")
sam=$("$SIGNIN_BIN" cookie --proxy "$proxy" --user "$SAM")
say "opening $COUNT websockets ($LEAVING of them Jean's)…"
"$HELPER" clients --proxy "$proxy" --proxy-pid "$PROXY_PID" --count "$COUNT" --leaving-count "$LEAVING" \
  --leaving "$leaving" --staying "$helene" --staying "$sam" | tee "$WORK/result.txt"
ended=$(grep -c '"open connection ended with its session"\|open connection ended with its session' "$WORK/proxy.log" || true)
say "proxy log: $ended lines 'open connection ended with its session'"
