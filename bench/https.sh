#!/usr/bin/env bash
# HTTPS: trousseau-proxy terminating TLS next to nginx terminating TLS, both with proxy_pass to the
# same app and the same certificate (a chain made here: root, intermediate, leaf; ECDSA P-256),
# measured side by side on this machine.
#
#   bench/https.sh                     # build release, run (~3 minutes), print the table
#   ROUNDS=7 DURATION=20s bench/https.sh
#
# The route measured is public on the proxy (no session): what differs from bench/run.sh's rows is
# TLS termination, and this measures exactly that — the session, identity headers and assertion
# cost the same over TLS as bench/run.sh measures them over plain http.
#
# Rows, each alternating nginx and the proxy for ROUNDS rounds (medians, and the median of each
# round's proxy/nginx ratio):
#   h1          HTTP/1.1 over TLS, CONNECTIONS keep-alive connections (wrk)
#   h2          HTTP/2 by ALPN, CONNECTIONS connections, one stream each (h2load)
#   handshakes  a new TLS connection for every request (wrk, `Connection: close`): full handshakes
#               per second, no resumption on either side
#
# Environment: ROUNDS (5), DURATION (10s), CONNECTIONS (64), THREADS (2), BENCH_PORT (18180: uses
# 18180-18182), SKIP_BUILD=1 to reuse target/release, PROXY_BIN, KEEP=1 to keep the work directory.
set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
BASE=${BENCH_PORT:-18180}
UP_PORT=$BASE NGINX_PORT=$((BASE + 1)) PROXY_PORT=$((BASE + 2))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXY_BIN=${PROXY_BIN:-$ROOT/target/release/trousseau-proxy}

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
need_tools nginx:nginx wrk:wrk h2load:nghttp2-client curl:curl openssl:openssl
ports_free "$UP_PORT" "$NGINX_PORT" "$PROXY_PORT"
build_release --bin trousseau-proxy
work_dir https

# --- the certificate chain ---------------------------------------------------------------------
(
  cd "$WORK"
  ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
  ec root.key && openssl req -x509 -new -key root.key -subj "/CN=bench root" -days 2 -out root.pem \
    -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  ec inter.key && openssl req -new -key inter.key -subj "/CN=bench intermediate" -out inter.csr 2>/dev/null
  printf 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign\n' >inter.ext
  openssl x509 -req -in inter.csr -CA root.pem -CAkey root.key -CAcreateserial -days 2 -extfile inter.ext -out inter.pem 2>/dev/null
  ec leaf.key && openssl req -new -key leaf.key -subj "/CN=127.0.0.1" -out leaf.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >leaf.ext
  openssl x509 -req -in leaf.csr -CA inter.pem -CAkey inter.key -CAcreateserial -days 2 -extfile leaf.ext -out leaf.pem 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in leaf.key -out leaf.p8 2>/dev/null
  cat leaf.pem inter.pem >chain.pem
)

# --- processes ---------------------------------------------------------------------------------
app_nginx "$UP_PORT"
# nginx's TLS front: the same chain and key, TLS 1.2 and 1.3, h2 and http/1.1 by ALPN, HSTS like
# the proxy's, an access log line per request like the proxy's.
nginx_conf front auto "access_log $WORK/front-access.log;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGINX_PORT ssl http2 backlog=4096;
    ssl_certificate $WORK/chain.pem; ssl_certificate_key $WORK/leaf.key; ssl_protocols TLSv1.2 TLSv1.3;
    add_header Strict-Transport-Security \"max-age=31536000\" always;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

cat >"$WORK/proxy.yaml" <<EOF
listen: "127.0.0.1:$PROXY_PORT"
public_url: "https://127.0.0.1:$PROXY_PORT"
upstream: "http://127.0.0.1:$UP_PORT"
tls:
  cert_file: "$WORK/chain.pem"
  key_file: "$WORK/leaf.p8"
routes:
  public: ["/bench"]
oidc:
  issuer: "http://127.0.0.1:9/application/o/bench/"   # never reached: the route is public
  client_id: bench
  client_secret: bench
session:
  secrets: ["$(openssl rand -base64 32)"]
limits:
  max_requests_per_client: 0
EOF
"$PROXY_BIN" --config "$WORK/proxy.yaml" 2>"$WORK/proxy.log" &
PROXY_PID=$!
PIDS+=($PROXY_PID)

wait_for "http://127.0.0.1:$UP_PORT/"
wait_for "https://127.0.0.1:$NGINX_PORT/bench" --cacert "$WORK/root.pem"
wait_for "https://127.0.0.1:$PROXY_PORT/bench" --cacert "$WORK/root.pem"
for port in $NGINX_PORT $PROXY_PORT; do
  alpn=$(curl -sS --http2 --cacert "$WORK/root.pem" -o /dev/null -w '%{http_version}' "https://127.0.0.1:$port/bench")
  [ "$alpn" = 2 ] || { say "port $port did not negotiate h2 (got $alpn)"; exit 1; }
done

# --- load --------------------------------------------------------------------------------------
wrk_report

run_wrk() { # url [wrk args…] — prints "rps p99_us errors requests"
  local url=$1; shift
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/report.lua" "$@" "$url" >"$WORK/wrk.out"
  tail -n 1 "$WORK/wrk.out"
}

run_h2() { # url — the same fields
  h2load -t"$THREADS" -c"$CONNECTIONS" -m1 -D "$DURATION" --log-file "$WORK/h2.log" "$1" >"$WORK/h2.out"
  local rps errors requests p99
  rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$WORK/h2.out")
  # requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
  errors=$(awk '/^requests:/ { print $10 + $12 + $14 }' "$WORK/h2.out")
  requests=$(awk '/^requests:/ { print $2 }' "$WORK/h2.out")
  p99=$(awk '{ print $3 }' "$WORK/h2.log" | sort -n | awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; print v[i] }')
  echo "$rps $p99 $errors $requests"
}

ROWS=()
compare() { # label runner [args for both…]
  local label=$1 runner=$2; shift 2
  local n_rps=() p_rps=() n_p99=() p_p99=() ratios=() errors=0
  say "$label: warming up, then $ROUNDS rounds of $DURATION each side"
  DURATION=2s $runner "https://127.0.0.1:$NGINX_PORT/bench" "$@" >/dev/null
  DURATION=2s $runner "https://127.0.0.1:$PROXY_PORT/bench" "$@" >/dev/null
  for _ in $(seq 1 "$ROUNDS"); do
    read -r rps p99 err _ < <($runner "https://127.0.0.1:$NGINX_PORT/bench" "$@")
    n_rps+=("$rps") n_p99+=("$p99") errors=$((errors + err))
    read -r prps pp99 perr _ < <($runner "https://127.0.0.1:$PROXY_PORT/bench" "$@")
    p_rps+=("$prps") p_p99+=("$pp99") errors=$((errors + perr))
    ratios+=("$(awk -v a="$prps" -v b="$rps" 'BEGIN { printf "%.3f", a / b }')")
  done
  ROWS+=("$(printf '%-11s %10.0f %10.0f %8s   %8.2f %8.2f   %6d' "$label" \
    "$(printf '%s\n' "${n_rps[@]}" | median)" "$(printf '%s\n' "${p_rps[@]}" | median)" \
    "$(printf '%s\n' "${ratios[@]}" | median)" \
    "$(printf '%s\n' "${n_p99[@]}" | median | awk '{ print $1 / 1000 }')" \
    "$(printf '%s\n' "${p_p99[@]}" | median | awk '{ print $1 / 1000 }')" "$errors")")
}

compare h1 run_wrk
compare h2 run_h2
compare handshakes run_wrk -H "Connection: close"

printf '\nHTTPS, %s rounds of %s, %s connections, %s load threads, %s cores\n' "$ROUNDS" "$DURATION" "$CONNECTIONS" "$THREADS" "$(nproc)"
printf '%-11s %10s %10s %8s   %8s %8s   %6s\n' row "nginx/s" "proxy/s" ratio "nginx p99" "proxy p99" errors
printf '%-11s %10s %10s %8s   %8s %8s   %6s\n' "" "" "" "" "(ms)" "(ms)" ""
printf '%s\n' "${ROWS[@]}"
