#!/usr/bin/env bash
# Runs fuzz targets under libFuzzer for a fixed number of executions each, then prints a table:
# target, executions, exec/s, crashes (crash/timeout/OOM artifacts), corpus size, peak RSS.
#
#   fuzz/run-all.sh [-n RUNS] [-j PARALLEL] [-t SECONDS] [target ...]
#
#   -n RUNS      executions per target (default 10000000)
#   -j PARALLEL  targets run at once (default 1; one core each)
#   -t SECONDS   libFuzzer's per-input timeout (default 10): slower inputs are hangs
#   target ...   default: every [[bin]] of fuzz/Cargo.toml
#
# CARGO_FUZZ_FLAGS is passed to `cargo fuzz build` and `cargo fuzz run`: `-s none` drops
# AddressSanitizer (our code has no `unsafe`; about 3x faster), debug assertions and overflow
# checks stay on (cargo-fuzz's default).
#
# Needs nightly Rust and cargo-fuzz (`cargo install cargo-fuzz`). New corpus entries go to
# fuzz/work/<target>/ (git-ignored); the committed seeds in fuzz/corpus/<target>/ are read, never
# written. Findings land in fuzz/artifacts/<target>/; the exit status is non-zero if there is any.
set -uo pipefail
cd "$(dirname "$0")"

runs=10000000
parallel=1
timeout=10
while getopts "n:j:t:" opt; do
  case $opt in
    n) runs=$OPTARG ;;
    j) parallel=$OPTARG ;;
    t) timeout=$OPTARG ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(grep -A1 '^\[\[bin\]\]' Cargo.toml | sed -n 's/^name = "\(.*\)"/\1/p')
fi

# Largest input libFuzzer makes, per target (the markers expand after this limit applies).
max_len() {
  case $1 in
    config|id_token|id_token_claims|logout_token|logout_token_claims) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

read -r -a fuzz_flags <<<"${CARGO_FUZZ_FLAGS:-}"
export CARGO_FUZZ_FLAGS="${CARGO_FUZZ_FLAGS:-}"
if ! cargo +nightly fuzz build "${fuzz_flags[@]}" 2>&1 | tail -3; then
  echo "run-all: build failed" >&2
  exit 1
fi

mkdir -p work logs artifacts
run_one() {
  local t=$1
  mkdir -p "work/$t" "artifacts/$t"
  local before
  before=$(find "artifacts/$t" -type f | wc -l)
  local started=$SECONDS
  local flags
  read -r -a flags <<<"$CARGO_FUZZ_FLAGS"
  cargo +nightly fuzz run "${flags[@]}" "$t" "work/$t" "corpus/$t" -- \
    -runs="$runs" -max_len="$(max_len "$t")" -timeout="$timeout" -rss_limit_mb=2048 \
    -dict="dicts/$t.dict" -print_final_stats=1 \
    >"logs/$t.log" 2>&1
  local status=$?
  local after
  after=$(find "artifacts/$t" -type f | wc -l)
  echo "$t $status $((after - before)) $((SECONDS - started))" >"logs/$t.result"
}
export -f run_one max_len
export runs timeout

printf '%s\n' "${targets[@]}" | xargs -P "$parallel" -I{} bash -c 'run_one {}'

stat() { sed -n "s/^stat::$2: *//p" "logs/$1.log" | tail -1; }
failed=0
printf '\n%-22s %14s %10s %8s %8s %9s %8s\n' target executions exec/s crashes corpus "peak MB" seconds
for t in "${targets[@]}"; do
  read -r _ status crashes secs <"logs/$t.result"
  execs=$(stat "$t" number_of_executed_units)
  rate=$(stat "$t" average_exec_per_sec)
  rss=$(stat "$t" peak_rss_mb)
  corpus=$(( $(find "work/$t" -type f | wc -l) + $(find "corpus/$t" -type f | wc -l) ))
  if [ "$status" != 0 ] || [ "$crashes" != 0 ]; then
    failed=1
    crashes="$crashes!"
  fi
  printf '%-22s %14s %10s %8s %8s %9s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$crashes" "$corpus" "${rss:-?}" "$secs"
done
if [ $failed = 1 ]; then
  echo
  echo "findings: see fuzz/artifacts/<target>/ and fuzz/logs/<target>.log; reproduce with"
  echo "  cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>"
fi
exit $failed
