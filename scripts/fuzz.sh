#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/, one at a time, each for a bounded time:
#   debezium_record    chatcore's Debezium record decoder
#   validate_message   request validation of a posted message
#   jwt_verify         JWT verification (chatcore::auth::Authenticator: HS256 secret, JWK set)
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default: 60 s, every target)
#
# Installs cargo-fuzz if it is missing. cargo fuzz wants a nightly compiler; with only a stable
# toolchain it runs with RUSTC_BOOTSTRAP=1. The way to build is picked in this order, the first
# whose build succeeds wins (or forced with CHATCORE_FUZZ_MODE):
#   asan    RUSTC_BOOTSTRAP=1 cargo fuzz run        (AddressSanitizer, cargo fuzz's default)
#   nosan   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none
#   plain   cargo build --release with the sanitizer-coverage flags cargo fuzz would pass, linking
#           libfuzzer-sys's own libFuzzer main; the binaries are run directly
# Every mode builds with debug assertions and overflow checks on.
#
# Seeds are read from fuzz/corpus/<target>/ (committed, never written to); what the fuzzer
# learns goes to fuzz/target/corpus/<target>/ (kept between runs, ignored by git). Crashing
# inputs are saved under fuzz/artifacts/<target>/. Exits non-zero if any target crashed or could
# not run, printing where each crashing input was saved and how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

secs=60
if [ $# -gt 0 ]; then
  secs=$1
  shift
fi
case "$secs" in '' | *[!0-9]*)
  echo "usage: $0 [seconds-per-target] [target...]" >&2
  exit 2
  ;;
esac
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=(debezium_record validate_message jwt_verify)
fi

fuzz_dir=$root/fuzz
logs=$fuzz_dir/target/fuzz-logs
mkdir -p "$logs"
triple=$(rustc -vV | sed -n 's/^host: //p')
# What cargo fuzz passes for coverage (cargo-fuzz 0.13, sanitizer none); all stable -C flags.
plain_rustflags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions \
-Coverflow-checks -Cforce-frame-pointers"
plain_target_dir=$fuzz_dir/target/plain

# fuzz/Cargo.lock is not committed (cargo writes the registry's address into it): start it from
# the root workspace's lock, so chatcore builds here with the versions it is tested with, and
# start again from it whenever the root lock changed since (e.g. chatcore got a new dependency).
if [ ! -f "$fuzz_dir/Cargo.lock" ] || [ Cargo.lock -nt "$fuzz_dir/Cargo.lock" ]; then
  cp Cargo.lock "$fuzz_dir/Cargo.lock"
fi

if ! command -v cargo-fuzz > /dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

build() { # build MODE: builds every target in that mode
  case "$1" in
    asan) RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir "$fuzz_dir" -a ;;
    nosan) RUSTC_BOOTSTRAP=1 cargo fuzz build --fuzz-dir "$fuzz_dir" -a --sanitizer none ;;
    plain)
      local bins=()
      for t in "${targets[@]}"; do bins+=(--bin "$t"); done
      CARGO_TARGET_DIR=$plain_target_dir RUSTFLAGS="$plain_rustflags" \
        cargo build --release --manifest-path "$fuzz_dir/Cargo.toml" --target "$triple" "${bins[@]}"
      ;;
    *)
      echo "unknown CHATCORE_FUZZ_MODE $1 (asan, nosan or plain)" >&2
      return 2
      ;;
  esac
}

mode=${CHATCORE_FUZZ_MODE:-}
if [ -n "$mode" ]; then
  echo "== building ($mode)"
  build "$mode"
else
  for candidate in asan nosan plain; do
    echo "== building ($candidate)"
    if build "$candidate" > "$logs/build-$candidate.log" 2>&1; then
      mode=$candidate
      break
    fi
    echo "   failed; the end of $logs/build-$candidate.log:"
    tail -n 15 "$logs/build-$candidate.log" | sed 's/^/   | /'
  done
  if [ -z "$mode" ]; then
    echo "no way to build the fuzz targets worked" >&2
    exit 1
  fi
fi
echo "== mode: $mode"

libfuzzer_args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
failed=()
summary=()
for t in "${targets[@]}"; do
  work=$fuzz_dir/target/corpus/$t
  seeds=$fuzz_dir/corpus/$t
  artifacts=$fuzz_dir/artifacts/$t
  mkdir -p "$work" "$seeds" "$artifacts"
  log=$logs/$t.log
  echo
  echo "== $t: ${secs}s ($mode), log in $log"
  set +e
  case "$mode" in
    asan)
      RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir "$fuzz_dir" -a "$t" "$work" "$seeds" \
        -- "${libfuzzer_args[@]}" 2>&1 | tee "$log"
      ;;
    nosan)
      RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir "$fuzz_dir" -a --sanitizer none "$t" "$work" "$seeds" \
        -- "${libfuzzer_args[@]}" 2>&1 | tee "$log"
      ;;
    plain)
      "$plain_target_dir/$triple/release/$t" -artifact_prefix="$artifacts/" "${libfuzzer_args[@]}" \
        "$work" "$seeds" 2>&1 | tee "$log"
      ;;
  esac
  status=${PIPESTATUS[0]}
  set -e
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  summary+=("$t: exit $status, ${execs:-?} execs, ${rate:-?} exec/s; ${done_line:-no DONE line}")
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    echo
    echo "!! $t failed (exit $status)"
    grep -E "Test unit written to|panicked at" "$log" | sed 's/^/!! /' || true
    for input in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
      echo "!! crashing input saved at: $input"
      case "$mode" in
        plain) echo "!! reproduce: $plain_target_dir/$triple/release/$t $input" ;;
        nosan) echo "!! reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -a --sanitizer none $t $input" ;;
        *) echo "!! reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -a $t $input" ;;
      esac
    done
  fi
done

echo
echo "== summary ($mode, ${secs}s per target)"
printf '   %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]} (crashing inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "no crash"
