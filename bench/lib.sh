# Shared by the bench scripts (source it): tools, ports, the release build, a work directory
# cleaned up at exit with the processes started, nginx, waiting, medians and wrk's report.
# Expects ROOT (the repository) to be set.

say() { printf '%s\n' "$*" >&2; }

# need_tools command:debian-package … — installs what is missing (as root, from Debian), or says
# what to install and exits. Sets NGINX when nginx is among them.
need_tools() {
  local missing=() spec
  for spec in "$@"; do
    local tool=${spec%%:*} package=${spec#*:}
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      say "installing ${missing[*]} (Debian packages)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      say "missing: ${missing[*]} — install them (sudo apt-get install ${missing[*]}) and run again"
      exit 1
    fi
  fi
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# ports_free port … — exits when one is taken on 127.0.0.1.
ports_free() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      say "port $port is in use on 127.0.0.1; set BENCH_PORT to another base port (4180-4182 are the dev IdP's)"
      exit 1
    fi
  done
}

# build_release [cargo build arguments…] — unless SKIP_BUILD=1.
build_release() {
  if [ "${SKIP_BUILD:-}" != 1 ]; then
    say "building release ($*)…"
    (cd "$ROOT" && cargo build --release --quiet "$@")
  fi
}

# work_dir name — WORK, a fresh directory removed at exit (kept with KEEP=1), and PIDS, the
# processes stopped at exit.
work_dir() {
  WORK=$(mktemp -d "/tmp/trousseau-$1.XXXXXX")
  PIDS=()
  trap cleanup EXIT
  trap 'exit 130' INT TERM # through the EXIT trap: cleaned up once, and the script stops
}

cleanup() {
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-}" = 1 ]; then say "logs kept in $WORK"; else rm -rf "$WORK"; fi
}

# nginx_conf name workers http-block — starts an nginx with this configuration in WORK.
nginx_conf() {
  cat >"$WORK/$1.conf" <<EOF
worker_processes $2;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  client_body_temp_path $WORK/$1-body; proxy_temp_path $WORK/$1-proxy;
  fastcgi_temp_path $WORK/$1-fastcgi; uwsgi_temp_path $WORK/$1-uwsgi; scgi_temp_path $WORK/$1-scgi;
  keepalive_requests 1000000;
  $3
}
EOF
  "$NGINX" -p "$WORK" -c "$WORK/$1.conf" &
  PIDS+=($!)
}

# app_nginx port — the app every bench proxies to: nginx answering a small body. backlog=4096:
# nginx's default (511) drops SYNs when hundreds of connections open at once, and the
# retransmission a second later becomes a p99 of one second.
app_nginx() {
  nginx_conf upstream 1 "access_log off;
  server { listen 127.0.0.1:$1 backlog=4096; location / { default_type text/plain; return 200 'hello from the app\n'; } }"
}

# wait_for url [curl arguments…] — up to 10 s for a 2xx, else exits.
wait_for() {
  local url=$1
  shift
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  say "not answering: $url"
  exit 1
}

# The median of the numbers on standard input.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# wrk_report — writes WORK/report.lua: wrk then prints "req/s p99_us errors requests".
wrk_report() {
  cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  io.write(string.format("%.1f %d %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status,
    summary.requests))
end
EOF
}
