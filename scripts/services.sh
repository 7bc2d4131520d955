#!/usr/bin/env bash
# Real services for the tests, on loopback only.
#
#   scripts/services.sh up       install what is missing, start what is not running, wait until
#                                each answers, print `export NAME=value` lines for the tests
#   scripts/services.sh down     stop what `up` started
#   scripts/services.sh status   say what is running
#   scripts/services.sh env      print the variables without starting anything
#
# Idempotent: a running service is reused. Ports: CHATCORE_REDIS_PORT (16379), CHATCORE_SMTP_PORT
# (12525). Downloads and state live in .cache/ (git-ignored), so a second run is fast.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${CHATCORE_CACHE_DIR:-$root/.cache}"
state="$cache/services"
redis_port="${CHATCORE_REDIS_PORT:-16379}"
smtp_port="${CHATCORE_SMTP_PORT:-12525}"
venv="$cache/venv"
mkdir -p "$state"

log() { printf 'services: %s\n' "$*" >&2; }

apt_updated=""
ensure_apt() { # ensure_apt <command> <package>
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then apt-get update -qq >&2; apt_updated=1; fi
  apt-get install -y -qq --no-install-recommends "$2" >&2
}

ensure_venv() { # ensure_venv <module> <pip package>
  if [ ! -x "$venv/bin/python" ]; then
    log "creating a Python virtualenv in $venv"
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c "import $1" >/dev/null 2>&1; then
    log "installing $2 from PyPI"
    "$venv/bin/pip" install -q "$2" >&2
  fi
}

wait_for() { # wait_for <description> <command...>
  local what="$1"; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "$what did not come up; see $state"
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- Redis -------------------------------------------------------------------------------------
redis_ping() { [ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = "PONG" ]; }

redis_up() {
  ensure_apt redis-server redis-server
  ensure_apt redis-cli redis-tools
  if redis_ping; then return 0; fi
  mkdir -p "$state/redis"
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$state/redis" --daemonize yes --pidfile "$state/redis/redis.pid" \
    --logfile "$state/redis/redis.log" >&2
  wait_for "Redis on $redis_port" redis_ping
}

redis_down() {
  if redis_ping; then redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true; fi
}

# --- SMTP sink ---------------------------------------------------------------------------------
smtp_up() {
  ensure_venv aiosmtpd aiosmtpd
  if port_open "$smtp_port"; then return 0; fi
  mkdir -p "$state/smtp/maildir"
  nohup "$venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$smtp_port" \
    -c aiosmtpd.handlers.Mailbox "$state/smtp/maildir" \
    >"$state/smtp/smtp.log" 2>&1 &
  echo $! >"$state/smtp/smtp.pid"
  wait_for "SMTP sink on $smtp_port" port_open "$smtp_port"
}

smtp_down() {
  if [ -f "$state/smtp/smtp.pid" ]; then
    kill "$(cat "$state/smtp/smtp.pid")" 2>/dev/null || true
    rm -f "$state/smtp/smtp.pid"
  fi
}

print_env() {
  cat <<ENV
export CHATCORE_TEST_REDIS=redis://127.0.0.1:$redis_port
export CHATCORE_TEST_REDIS_SERVER=$(command -v redis-server || echo redis-server)
export CHATCORE_TEST_SMTP=127.0.0.1:$smtp_port
export CHATCORE_TEST_SMTP_MAILDIR=$state/smtp/maildir
ENV
}

case "${1:-}" in
  up)
    redis_up
    smtp_up
    print_env
    ;;
  down)
    redis_down
    smtp_down
    ;;
  status)
    if redis_ping; then echo "redis: up on 127.0.0.1:$redis_port"; else echo "redis: down"; fi
    if port_open "$smtp_port"; then echo "smtp: up on 127.0.0.1:$smtp_port"; else echo "smtp: down"; fi
    ;;
  env)
    print_env
    ;;
  *)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
