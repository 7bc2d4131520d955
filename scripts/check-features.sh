#!/usr/bin/env bash
# The SDK's feature discipline: chatcore compiles with no default features and with every feature
# alone; a crate that only implements a trait pays for no web server, mail client, HTTP client
# or JWT verifier. Exits non-zero on the first violation.
set -euo pipefail
cd "$(dirname "$0")/.."

features=(server http ws auth-jwt rate-limit openapi prometheus http-client smtp test-util)
echo "chatcore --no-default-features"
cargo check -p chatcore --locked --no-default-features --quiet
for feature in "${features[@]}"; do
  echo "chatcore --no-default-features --features ${feature}"
  cargo check -p chatcore --locked --no-default-features --features "${feature}" --quiet
done

crates() { cargo tree --locked -p "$1" -e normal --prefix none "${@:2}" | sed 's/ (\*)$//; s/ (proc-macro)$//' | sort -u; }

count=$(crates chatcore --no-default-features | wc -l)
echo "cargo tree -p chatcore --no-default-features -e normal: ${count} crates"
if [ "${count}" -gt 70 ]; then
  echo "chatcore without default features brings ${count} crates (at most 70)" >&2
  exit 1
fi
for backend in chatcore-redis chatcore-kafka chatcore-mongo chatcore-sqlite; do
  heavy=$(crates "${backend}" | grep -E '^(axum|lettre|reqwest|jsonwebtoken|governor|utoipa|tower-http|prometheus-client) ' || true)
  echo "cargo tree -p ${backend} -e normal: $(crates "${backend}" | wc -l) crates"
  if [ -n "${heavy}" ]; then
    echo "${backend} depends on server crates:" >&2
    echo "${heavy}" >&2
    exit 1
  fi
done
