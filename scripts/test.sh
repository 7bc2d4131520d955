#!/usr/bin/env bash
# The whole test suite: formatting, lints, the real services the backend tests need (started by
# scripts/services.sh, stopped again at the end unless CHATCORE_KEEP_SERVICES=1), every test of
# the workspace including the service-dependent ones (`--include-ignored`), schemathesis against
# the served OpenAPI document (scripts/schemathesis.sh), and the embedded
# end-to-end tests again on each backend combination (Redis; Kafka + Redis; MongoDB; MongoDB +
# Kafka + Redis). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$1" "$(($(date +%s) - started))"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo doc (no broken links, every public item documented)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

step "features: chatcore alone, with each feature, and the backend crates without server crates (scripts/check-features.sh)"
scripts/check-features.sh

step "services up"
if [ "${CHATCORE_KEEP_SERVICES:-0}" != "1" ]; then
  trap 'scripts/services.sh down || true' EXIT
fi
# Assigned first so a failing `up` stops the run (an `eval "$(...)"` would hide its status).
service_env="$(scripts/services.sh up)"
eval "$service_env"
scripts/services.sh status

step "services of two checkouts side by side stay apart (scripts/services-isolation-test.sh)"
scripts/services-isolation-test.sh

step "cargo test (all, including service-dependent tests; the soak runs in the next step)"
cargo test --workspace --locked -- --include-ignored --skip soak_under_faults

step "a short soak under faults: 2 minutes, a component SIGKILLed every 12 s (scripts/soak.sh)"
SOAK_FAULT_EVERY="${SOAK_FAULT_EVERY:-12}" scripts/soak.sh "${SOAK_MINUTES:-2}"

step "schemathesis against /openapi.json of a running chat-server (no 5xx, answers as documented)"
scripts/schemathesis.sh

step "embedded end-to-end tests on the durable SQLite default (STORE=sqlite, a DATA_DIR per server)"
STORE=sqlite cargo test -p reference-server --locked --test it -- embedded:: delivery:: strategies:: inbox:: conversations::

step "embedded end-to-end tests with the Redis event store (REDIS_ADDR)"
REDIS_ADDR="${CHATCORE_TEST_REDIS}" \
  cargo test -p reference-server --locked --test it -- embedded:: delivery:: strategies:: inbox:: conversations::

step "embedded end-to-end tests through Kafka and Redis (store -> relay -> Kafka -> consumer)"
REDIS_ADDR="${CHATCORE_TEST_REDIS}" \
  CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS="${CHATCORE_TEST_KAFKA}" \
  cargo test -p reference-server --locked --test it -- embedded:: delivery:: strategies:: inbox:: conversations::

step "embedded end-to-end tests on MongoDB (store and change stream)"
MONGO_URI="${CHATCORE_TEST_MONGO_URI}" \
  cargo test -p reference-server --locked --test it -- embedded:: delivery:: strategies:: inbox:: conversations::

step "embedded end-to-end tests on the production path: MongoDB -> relay -> Kafka -> Redis-deduplicated consumer"
MONGO_URI="${CHATCORE_TEST_MONGO_URI}" REDIS_ADDR="${CHATCORE_TEST_REDIS}" \
  CHAT_PERSISTENCE_CHANGE_KAFKA_BOOTSTRAP_SERVERS="${CHATCORE_TEST_KAFKA}" \
  cargo test -p reference-server --locked --test it -- embedded:: delivery:: strategies:: inbox:: conversations::

step "done"
