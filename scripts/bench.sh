#!/usr/bin/env bash
# `make bench`: builds in release mode, runs every benchmark against the SPEC "Targets",
# prints a table and writes bench/results.md (core count, commit, date).
#
#   examples/bench_webhook.rs      admission reviews over TLS (oha, HTTP/1.1 + HTTP/2), RSS
#   examples/bench_datastorage.rs  batch ingestion into PostgreSQL, COPY ceiling, single POST,
#                                  single POST under 50 statistics readers + 500 idle connections
#   examples/bench_cleanup.rs      1,000 (then 5,000 and 20,000: BENCH_CLEANUP_SIZES) SignalProcessings deleted: (a) no finalizer, (b) the floor
#                                  controller (examples/floor_controller.rs), (c) the controller-runtime
#                                  peer from ../shared/peers/cleanup-controller, (d) audit-guard serve
#   examples/bench_cache.rs       serve RSS with 1,000 / 10,000 / 50,000 SignalProcessings of Kubernaut's
#                                  shape in the cluster (BENCH_CACHE_SIZES): MiB per 1,000 cached
#   examples/bench_writer.rs       buffered writer enqueue cost and memory
#   examples/bench_evidence.rs     ingestion with the hash chain, verify of 1,000,000
#                                  records (BENCH_EVIDENCE_RECORDS), RSS of a 100,000-record export
#   examples/bench_tlog.rs         transparency log core: root of 1,000,000 entries, proof make/check
#                                  time and size, checkpoint sign/verify (BENCH_TLOG_ENTRIES)
#
# BENCH_ONLY="webhook writer" runs a subset (results.md then lists only those).
# BENCH_RUNS (default 3): rounds of the whole set, interleaved (round 1 of every benchmark, then
# round 2, ...), so a slow spell of the machine falls on every benchmark alike. Numeric targets are
# judged on the median of the rounds (scripts/bench-medians.py); the detail tables are the last
# round's.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
cargo="${CARGO:-cargo}"
tools="${AUDIT_GUARD_CACHE:-$HOME/.cache/audit-guard}/tools"
oha="${OHA:-$tools/bin/oha}"
db_url="${DATABASE_URL_TEST:-postgres://audit_guard:audit_guard@127.0.0.1:5432/audit_guard}"
only="${BENCH_ONLY:-webhook datastorage cleanup cache writer evidence tlog}"
runs="${BENCH_RUNS:-3}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out_dir="$root/bench"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

say() { printf '\n>> %s\n' "$*" >&2; }

say "building in release mode (audit-guard and the benchmark examples; several minutes on a cold cache)"
"$cargo" build --release --bin audit-guard \
  --example bench_webhook --example bench_datastorage --example bench_cleanup --example bench_writer --example bench_evidence --example bench_tlog --example bench_cache \
  --example floor_controller
bin="$target_dir/release/audit-guard"
ex="$target_dir/release/examples"

# The Go peers (controller-runtime) the cleanup and webhook benchmarks compare against: built from
# ../shared/peers with Go and the module proxy, binaries cached outside the repository. Absent
# ../shared (or Go): those rows are skipped with a note.
peers_src="${BENCH_PEERS_SRC:-$root/../shared/peers}"
peers_bin="${AUDIT_GUARD_CACHE:-$HOME/.cache/audit-guard}/peers"
export BENCH_PEER_CLEANUP="" BENCH_PEER_WEBHOOK=""
if [ -d "$peers_src" ] && command -v go >/dev/null 2>&1; then
  mkdir -p "$peers_bin"
  for p in cleanup-controller webhook; do
    if [ -f "$peers_src/$p/go.mod" ]; then
      say "building the Go peer $p ($peers_src/$p)"
      if (cd "$peers_src/$p" && go build -o "$peers_bin/$p" .) >&2; then
        case $p in
          cleanup-controller) BENCH_PEER_CLEANUP="$peers_bin/$p" ;;
          webhook) BENCH_PEER_WEBHOOK="$peers_bin/$p" ;;
        esac
      else
        say "the Go peer $p did not build: its rows are skipped"
      fi
    fi
  done
else
  say "no $peers_src (or no go): the controller-runtime peer rows are skipped"
fi

# oha drives the webhook set only.
if [[ " $only " == *" webhook "* ]] && [ ! -x "$oha" ]; then
  if command -v oha >/dev/null 2>&1; then
    oha="$(command -v oha)"
  else
    say "installing oha 1.12.0 into $tools"
    "$cargo" install oha --version 1.12.0 --locked --root "$tools"
  fi
fi

say "making sure PostgreSQL runs"
bash scripts/postgres.sh start >&2

if [[ " $only " == *" cleanup "* || " $only " == *" cache "* ]]; then
  say "building the control plane binaries (cached after the first time)"
  AUDIT_GUARD_CONTROLPLANE_BIN="$(bash controlplane/build.sh)"
  export AUDIT_GUARD_CONTROLPLANE_BIN
fi

# run NAME ROUND COMMAND...: one benchmark's round; its output in $work/NAME.ROUND.out.
run() {
  local name="$1" round="$2"
  shift 2
  say "benchmark: $name, round $round of $runs"
  local start=$SECONDS out="$work/$name.$round.out"
  if ! "$@" >"$out" 2>"$work/$name.err"; then
    echo "benchmark $name FAILED; its stderr:" >&2
    tail -n 30 "$work/$name.err" >&2
    printf 'TARGET\t%s\t-\tbenchmark failed: %s\t**no**\n' "$name" "$(tail -n 1 "$work/$name.err" | tr '\t' ' ')" >"$out"
  fi
  grep -v '^TARGET' "$out" >&2 || true
  echo "   ($((SECONDS - start)) s)" >&2
}

# bench_cleanup's own rounds: one per outer round, so each regime runs $runs times, interleaved.
export BENCH_ROUNDS="${BENCH_ROUNDS:-1}"
# The cleanup's growth: (b) and (d) at each size ((a) and (c) at the first).
export BENCH_CLEANUP_SIZES="${BENCH_CLEANUP_SIZES:-1000 5000 20000}"
export AUDIT_GUARD_BIN="$bin" OHA="$oha" DATABASE_URL_TEST="$db_url" BENCH_FLOOR_BIN="$ex/floor_controller"
for round in $(seq 1 "$runs"); do
  for b in $only; do
    case "$b" in
      webhook) run webhook "$round" "$ex/bench_webhook" ;;
      datastorage) run datastorage "$round" "$ex/bench_datastorage" "$db_url" ;;
      cleanup) run cleanup "$round" "$ex/bench_cleanup" "$db_url" ;;
      cache) run cache "$round" "$ex/bench_cache" ;;
      writer) run writer "$round" "$ex/bench_writer" ;;
      evidence) run evidence "$round" "$ex/bench_evidence" "$db_url" ;;
      tlog) run tlog "$round" "$ex/bench_tlog" ;;
      *) echo "unknown benchmark $b" >&2; exit 2 ;;
    esac
  done
done

commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples scripts || echo '+dirty')"
cores="$(nproc)"
cpu="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
mkdir -p "$out_dir"
{
  echo "# audit-guard benchmarks"
  echo
  echo "\`make bench\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$commit\`, $cores cores ($cpu), $mem RAM;"
  echo "load generators (oha, the benchmark clients) and the control plane share the machine with the measured process."
  echo
  echo "## SPEC targets"
  echo
  echo "Each benchmark ran $runs times, interleaved; a numeric target is judged on the **median** of"
  echo "its rounds (min and max beside it), a qualitative one on every round. Detail tables below are"
  echo "from the last round."
  echo
  echo "| target | goal | measured | met? |"
  echo "|---|---|---|---|"
  for b in $only; do
    python3 scripts/bench-medians.py $(seq -f "$work/$b.%g.out" 1 "$runs")
  done
  if [ -f "$out_dir/notes.md" ]; then
    echo
    cat "$out_dir/notes.md"
  fi
  for b in $only; do
    echo
    echo "## $b"
    echo
    grep -v '^TARGET' "$work/$b.$runs.out" || true
  done
} >"$out_dir/results.md"

say "results (also in bench/results.md)"
sed -n '/## SPEC targets/,/^## [a-z]/p' "$out_dir/results.md" | sed '$d'
