#!/usr/bin/env bash
# A soak under faults (reference-server/tests/soak.rs): the split topology behind nginx on a
# Kafka broker, a MongoDB wire server (H2 backend, keeping its data and oplog) and a Redis that
# the soak starts itself on free ports, under steady load, while a component is SIGKILLed and
# restarted every SOAK_FAULT_EVERY seconds (default 20). Prints one summary line
#   soak: sent=… acked=… stored=… lost=0 duplicated=0 reordered=0 faults=… p50_ms=… p99_ms=… max_ms=…
# and exits non-zero on any loss, duplicate or reordering.
#
#   scripts/soak.sh [minutes]     default 3; fractions allowed (0.5)
#
# Other settings: SOAK_CONVERSATIONS (20), SOAK_RATE (posts per second in all, 10), SOAK_SEED.
# scripts/services.sh only provides the jars and binaries (Kafka's, mongo-java-server's,
# redis-server, nginx): none of its services is used or disturbed. Data and logs go to a
# chatcore-soak-* directory under TMPDIR (/tmp), removed at the end (logs are kept on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

minutes="${1:-${SOAK_MINUTES:-3}}"
if [ -z "${CHATCORE_TEST_KAFKA_HOME:-}" ] || [ -z "${CHATCORE_TEST_MONGO_CLASSPATH:-}" ]; then
  # Installs and fetches what is missing (first run only); the services it starts are not used.
  service_env="$(scripts/services.sh up)"
  eval "$service_env"
fi
SOAK_MINUTES="$minutes" cargo test -p reference-server --locked --test soak \
  -- --ignored --exact soak_under_faults --nocapture
