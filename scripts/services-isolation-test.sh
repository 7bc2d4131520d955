#!/usr/bin/env bash
# Two checkouts' `scripts/services.sh up` side by side never share a service.
#
# Run while this checkout's services are up (scripts/test.sh does). A second checkout (a copy of
# scripts/ in a temporary directory: all that services.sh reads) brings its services up with the
# downloads shared (CHATCORE_CACHE_DIR) and no port set: every one of its services must come up on
# a port of its own, answered by a process of its own, and its `down` must leave this checkout's
# services running. Asking it for a port this checkout holds must fail with one line naming the
# port and its holder. Exits non-zero on any failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${CHATCORE_CACHE_DIR:-$root/.cache}"

fail() { printf 'services-isolation: FAIL: %s\n' "$*" >&2; exit 1; }
port_of() { sed -n "s/^$1=//p" "$2" 2>/dev/null || true; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ours="$root/.cache/services/ports"
[ -f "$ours" ] || fail "this checkout's services are not up (no $ours)"
for name in redis smtp kafka mongo; do
  port_open "$(port_of "$name" "$ours")" || fail "this checkout's $name is not answering"
done

other="$(mktemp -d)"
# A clean environment: nothing of this checkout's exported CHATCORE_* variables may leak in.
run_other() {
  env -i PATH="$PATH" HOME="$HOME" CHATCORE_CACHE_DIR="$cache" "$@"
}
cleanup() { run_other "$other/scripts/services.sh" down >/dev/null 2>&1 || true; rm -rf "$other"; }
trap cleanup EXIT
cp -r "$root/scripts" "$other/scripts"

run_other "$other/scripts/services.sh" up >"$other/env" 2>"$other/up.log" \
  || { cat "$other/up.log" >&2; fail "the second checkout's up failed"; }
theirs="$other/.cache/services/ports"
for name in redis smtp kafka kafka_controller mongo; do
  mine="$(port_of "$name" "$ours")"
  other_port="$(port_of "$name" "$theirs")"
  [ -n "$other_port" ] || fail "the second checkout recorded no $name port"
  [ "$mine" != "$other_port" ] || fail "$name: both checkouts use port $mine"
  grep -q "$name: port $mine is held by" "$other/up.log" || fail "$name: the move off port $mine was not logged"
done
grep -q "CHATCORE_TEST_REDIS=redis://127.0.0.1:$(port_of redis "$theirs")$" "$other/env" \
  || fail "the second checkout's exports do not name its own Redis"
grep -q "CHATCORE_TEST_MONGO_URI=mongodb://127.0.0.1:$(port_of mongo "$theirs")/" "$other/env" \
  || fail "the second checkout's exports do not name its own MongoDB"
[ "$(redis-cli -p "$(port_of redis "$theirs")" ping)" = PONG ] || fail "the second Redis does not answer"
# Each checkout's Redis is its own: a key written in one is absent from the other.
redis-cli -p "$(port_of redis "$theirs")" set isolation-probe theirs >/dev/null
[ -z "$(redis-cli -p "$(port_of redis "$ours")" get isolation-probe)" ] || fail "the two Redis share keys"
for name in smtp kafka mongo; do
  port_open "$(port_of "$name" "$theirs")" || fail "the second checkout's $name does not answer"
done

# An explicit port that another checkout holds: one line, exit 1, nothing started.
held="$(port_of redis "$ours")"
if run_other CHATCORE_REDIS_PORT="$held" "$other/scripts/services.sh" up >/dev/null 2>"$other/clash.log"; then
  fail "an explicit CHATCORE_REDIS_PORT=$held held by the other checkout was accepted"
fi
[ "$(wc -l <"$other/clash.log")" -eq 1 ] || { cat "$other/clash.log" >&2; fail "the refusal is not one line"; }
grep -q "port $held (CHATCORE_REDIS_PORT) is held by pid" "$other/clash.log" \
  || { cat "$other/clash.log" >&2; fail "the refusal does not name the port and its holder"; }

run_other "$other/scripts/services.sh" down 2>/dev/null
for name in redis smtp kafka mongo; do
  port_open "$(port_of "$name" "$ours")" || fail "the second checkout's down stopped this checkout's $name"
  if port_open "$(port_of "$name" "$theirs")"; then fail "the second checkout's $name outlived its down"; fi
done
echo "services-isolation: ok (two checkouts side by side, no service shared)"
