#!/usr/bin/env bash
# Real services for the tests, on loopback only.
#
#   scripts/services.sh up       install what is missing, start what is not running, wait until
#                                each answers, print `export NAME=value` lines for the tests
#   scripts/services.sh down     stop what `up` started
#   scripts/services.sh status   say what is running
#   scripts/services.sh env      print the variables without starting anything
#   scripts/services.sh kafka-run <main class> [args...]
#                                run a Kafka class (e.g. org.apache.kafka.tools.TopicCommand) on
#                                the broker's classpath, for poking at the broker by hand
#   scripts/services.sh nginx-run <prefix dir> <main conf>
#                                run nginx in the foreground (`nginx -p <prefix dir> -c <main conf>
#                                -g 'daemon off;'`), installing it first if it is missing
#
# Idempotent: a service that this checkout started is reused. Ports: CHATCORE_REDIS_PORT (16379),
# CHATCORE_SMTP_PORT (12525), CHATCORE_KAFKA_PORT (19092), CHATCORE_KAFKA_CONTROLLER_PORT (19093) and
# CHATCORE_MONGO_PORT (27117). Downloads live in .cache/ (git-ignored; CHATCORE_CACHE_DIR shares them
# between checkouts), so a second run is fast (and needs no network).
#
# Isolation: state (pid files, data, the chosen ports) always lives in this checkout's
# .cache/services (CHATCORE_STATE_DIR overrides it), and a port held by a process that this checkout
# did not start is never reused: `up` moves that service to the next free port (and remembers it in
# .cache/services/ports, so `env`, `status` and `down` agree), or, when the port was set explicitly
# with its CHATCORE_*_PORT variable, stops with one line naming the port and the process holding it.
#
# Kafka is a single-node KRaft broker (combined broker and controller, no ZooKeeper) assembled from
# the org.apache.kafka:kafka_2.13 jars and their runtime dependencies, fetched once with Maven into
# .cache/kafka-<version>/jars and run with the machine's Java. Each start of a broker that was not
# running formats fresh storage, so every `up` after a `down` begins with no topics.
#
# MongoDB is de.bwaldvogel:mongo-java-server, a MongoDB wire-protocol server in Java, with its
# in-memory backend and its oplog enabled so change streams work: the jars are fetched once with
# Maven into .cache/mongo-java-server-<version>/jars, scripts/mongo/MongoLauncher.java is compiled
# against them (again only when the source changes) and run with the machine's Java. Being in
# memory, every start after a `down` begins empty. If CHATCORE_TEST_MONGO_URI is already set to
# another server, that server is used instead: nothing is started and its URI is printed.
#
# Kafka Connect and the Debezium MongoDB connector are only fetched, never started: `up` puts the
# org.apache.kafka connect-runtime, connect-json and connect-transforms jars of the broker's version
# into .cache/connect-<version>/jars and io.debezium:debezium-connector-mongodb (with its runtime
# dependencies, less Kafka's own) into .cache/connect-<version>/plugins/debezium-connector-mongodb,
# and prints CHATCORE_TEST_CONNECT_HOME and CHATCORE_TEST_CONNECT_PORT (CHATCORE_CONNECT_PORT, 18083):
# a test starts a standalone worker of its own with the shipped deploy/debezium configuration and
# stops it again, so no worker is ever shared between tests or checkouts. `connect-run <worker
# properties> <connector properties...>` runs one in the foreground (ConnectStandalone) on the same
# classpath, with plugin.path pointing at the plugins directory unless the worker file sets it.
#
# nginx (Debian's package) is only installed, never started: the balancer tests run instances of
# their own, each with its own prefix directory and a main configuration that includes
# deploy/nginx/chatcore.conf, through CHATCORE_TEST_NGINX (the binary, which lives in /usr/sbin)
# or `nginx-run`. Should the package's own service come up during the install (the machine's
# policy-rc.d normally forbids it), it is stopped again, so nothing is left on port 80.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${CHATCORE_CACHE_DIR:-$root/.cache}"        # downloads: may be shared by checkouts
state="${CHATCORE_STATE_DIR:-$root/.cache/services}" # pids, data, ports: this checkout's only
ports_file="$state/ports"
mkdir -p "$state" "$cache"
saved_port() { sed -n "s/^$1=//p" "$ports_file" 2>/dev/null | tail -1; }
# The port of a service: its CHATCORE_*_PORT variable, else the one this checkout used last, else
# the default.
initial_port() { # initial_port <name> <env var> <default>
  local explicit="${!2:-}" saved
  saved="$(saved_port "$1")"
  echo "${explicit:-${saved:-$3}}"
}
redis_port="$(initial_port redis CHATCORE_REDIS_PORT 16379)"
smtp_port="$(initial_port smtp CHATCORE_SMTP_PORT 12525)"
kafka_port="$(initial_port kafka CHATCORE_KAFKA_PORT 19092)"
kafka_controller_port="$(initial_port kafka_controller CHATCORE_KAFKA_CONTROLLER_PORT 19093)"
# A 4.x release (the class names below are those of 4.x); log4j pinned to the one it ships with.
kafka_version="${CHATCORE_KAFKA_VERSION:-4.3.1}"
kafka_log4j_version="${CHATCORE_KAFKA_LOG4J_VERSION:-2.25.4}"
kafka_home="$cache/kafka-$kafka_version" # jars/ and config/
kafka_state="$state/kafka"               # server.properties, data/, kafka.log, kafka.pid
kafka_wait_seconds=60
mongo_port="$(initial_port mongo CHATCORE_MONGO_PORT 27117)"
mongo_version="${CHATCORE_MONGO_SERVER_VERSION:-1.47.0}" # mongo-java-server; the newest release
mongo_slf4j_version=2.0.17                                # the slf4j-api it depends on
mongo_home="$cache/mongo-java-server-$mongo_version"      # jars/, classes/, maven/
mongo_state="$state/mongo"                                # mongo.log, mongo.pid
mongo_wait_seconds=30
connect_port="${CHATCORE_CONNECT_PORT:-18083}"
debezium_version="${CHATCORE_DEBEZIUM_VERSION:-3.6.1.Final}"
connect_home="$cache/connect-$kafka_version-debezium-$debezium_version" # jars/, plugins/, config/
venv="$cache/venv"

# One `up` or `down` at a time per cache dir: two concurrent `up`s would both start a Kafka on the
# same ports and data dir. flock -o keeps the lock out of the services this script starts.
if [ "${1:-}" = up ] || [ "${1:-}" = down ]; then
  if [ -z "${CHATCORE_SERVICES_LOCKED:-}" ] && command -v flock >/dev/null 2>&1; then
    CHATCORE_SERVICES_LOCKED=1 exec flock -o "$state/.lock" "$0" "$@"
  fi
fi
unset CHATCORE_SERVICES_LOCKED

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
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import $1" >/dev/null 2>&1; then return 0; fi
  with_cache_lock venv_install "$1" "$2"
}

venv_install() { # venv_install <module> <pip package>, under the cache lock
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

stop_pid() { # stop_pid <pid> <description> <seconds>: TERM, wait for the exit, KILL if it lingers
  local pid="$1" what="$2" seconds="$3"
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $((seconds * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$what (pid $pid) did not stop within $seconds s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

listener_pids() { # the pids listening on <port>, as this user can see them
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

listens() { # listens <port> <pid>: is <pid> (say, from this checkout's pid file) listening on <port>?
  [ -n "$2" ] && listener_pids "$1" | grep -qx "$2"
}

port_holder() { # who holds <port>, for a message
  local pid
  pid="$(listener_pids "$1" | head -1)"
  if [ -z "$pid" ]; then echo "a process this user cannot see"; return 0; fi
  printf 'pid %s (%s, in %s)' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)" \
    "$(readlink "/proc/$pid/cwd" 2>/dev/null || echo '?')"
}

ours_or_free() { # ours_or_free <port> <pid file>: nothing listens there, or this checkout's process
  ! port_open "$1" || listens "$1" "$(cat "$2" 2>/dev/null)"
}

chosen_ports=" "
claim_port() { # claim_port <name> <env var> <port variable> <pid file>: settle this checkout's port
  local name="$1" var="$2" pv="$3" pidfile="$4" port="${!3}" next
  if ! ours_or_free "$port" "$pidfile" || [[ "$chosen_ports" == *" $port "* ]]; then
    if [ -n "${!var:-}" ]; then
      log "port $port ($var) is held by $(port_holder "$port"), which this checkout did not start; set $var to a free port"
      exit 1
    fi
    next=$((port + 1))
    while port_open "$next" || [[ "$chosen_ports" == *" $next "* ]]; do next=$((next + 1)); done
    log "$name: port $port is held by $(port_holder "$port"), which this checkout did not start; using $next"
    printf -v "$pv" '%s' "$next"
  fi
  chosen_ports="$chosen_ports${!pv} "
}

claim_ports() { # every service's port for this checkout, remembered in $ports_file
  claim_port redis CHATCORE_REDIS_PORT redis_port "$state/redis/redis.pid"
  claim_port smtp CHATCORE_SMTP_PORT smtp_port "$state/smtp/smtp.pid"
  claim_port kafka CHATCORE_KAFKA_PORT kafka_port "$kafka_state/kafka.pid"
  claim_port kafka_controller CHATCORE_KAFKA_CONTROLLER_PORT kafka_controller_port "$kafka_state/kafka.pid"
  if ! mongo_external; then claim_port mongo CHATCORE_MONGO_PORT mongo_port "$mongo_state/mongo.pid"; fi
  printf '%s\n' "redis=$redis_port" "smtp=$smtp_port" "kafka=$kafka_port" \
    "kafka_controller=$kafka_controller_port" "mongo=$mongo_port" >"$ports_file"
}

whose() { # whose <port> <pid file>: a note for `status` when the listener is not this checkout's
  if ! listens "$1" "$(cat "$2" 2>/dev/null)"; then printf ' (held by %s, not this checkout)' "$(port_holder "$1")"; fi
}

with_cache_lock() { # with_cache_lock <command...>: one download into the (shared) cache at a time
  if command -v flock >/dev/null 2>&1; then
    (flock 9 && "$@") 9>"$cache/.fetch.lock"
  else
    "$@"
  fi
}

maven_jars() { # maven_jars <home>: the runtime dependencies of <home>/maven/pom.xml into
  # <home>/jars, marked complete (<home>/jars/.complete) only once Maven has succeeded
  local home="$1"
  rm -rf "$home/jars.partial"
  mvn -B -q -Dstyle.color=never -f "$home/maven/pom.xml" -Dmaven.repo.local="$cache/m2" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$home/jars.partial" 2>&1 \
    | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2
  touch "$home/jars.partial/.complete"
  rm -rf "$home/jars"
  mv "$home/jars.partial" "$home/jars"
}

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

redis_down() { # only the Redis this checkout started
  if listens "$redis_port" "$(cat "$state/redis/redis.pid" 2>/dev/null)"; then
    redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  fi
}

# --- SMTP sink ---------------------------------------------------------------------------------
smtp_up() {
  ensure_venv aiosmtpd aiosmtpd
  # The Maildir's own subdirectories too: Python's mailbox.Maildir creates them only when the
  # directory itself does not exist yet, and delivery fails without tmp/.
  mkdir -p "$state/smtp/maildir/tmp" "$state/smtp/maildir/new" "$state/smtp/maildir/cur"
  if port_open "$smtp_port"; then return 0; fi
  nohup "$venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$smtp_port" \
    -c aiosmtpd.handlers.Mailbox "$state/smtp/maildir" \
    >"$state/smtp/smtp.log" 2>&1 &
  echo $! >"$state/smtp/smtp.pid"
  wait_for "SMTP sink on $smtp_port" port_open "$smtp_port"
}

smtp_down() {
  local pid
  pid="$(cat "$state/smtp/smtp.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && grep -qa aiosmtpd "/proc/$pid/cmdline" 2>/dev/null; then
    stop_pid "$pid" "the SMTP sink" 10 # it takes a second or two to exit on TERM
  fi
  rm -f "$state/smtp/smtp.pid"
}

# --- Kafka -------------------------------------------------------------------------------------
kafka_fetch() {
  if [ -f "$kafka_home/jars/.complete" ]; then return 0; fi
  with_cache_lock kafka_download
}

kafka_download() { # under the cache lock: another checkout may have fetched them meanwhile
  if [ -f "$kafka_home/jars/.complete" ]; then return 0; fi
  ensure_apt java default-jre-headless
  ensure_apt mvn maven
  log "fetching Kafka $kafka_version jars with Maven into $kafka_home/jars (first run only)"
  mkdir -p "$kafka_home/maven"
  # kafka-tools brings TopicCommand, ConsoleProducer and ConsoleConsumer; its Connect runtime
  # (Jetty, Jersey) is not needed for those. log4j-slf4j-impl routes Kafka's SLF4J logging to the
  # log4j 2 that kafka-server already depends on.
  cat >"$kafka_home/maven/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.chatcore</groupId>
  <artifactId>kafka-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$kafka_version</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$kafka_version</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$kafka_log4j_version</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$kafka_log4j_version</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$kafka_log4j_version</version>
    </dependency>
  </dependencies>
</project>
POM
  maven_jars "$kafka_home"
}

kafka_tool() { # kafka_tool <main class> [args...]: a short-lived Kafka command-line tool, on
  # the broker's classpath; killed after $kafka_tool_timeout seconds if that is set
  ${kafka_tool_timeout:+timeout "$kafka_tool_timeout"} java -Djava.awt.headless=true \
    -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$kafka_home/config/tools-log4j2.properties" \
    -cp "$kafka_home/jars/*" "$@"
}

kafka_pid() { # the pid of the broker `up` started, if it is still running
  local pid
  pid="$(cat "$kafka_state/kafka.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null \
    && echo "$pid"
}

kafka_stop() {
  local pid
  if pid="$(kafka_pid)"; then stop_pid "$pid" Kafka 30; fi
  rm -f "$kafka_state/kafka.pid"
}

kafka_config() {
  mkdir -p "$kafka_home/config"
  mkdir -p "$kafka_state"
  cat >"$kafka_state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$kafka_controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$kafka_controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$kafka_controller_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$kafka_state/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  cat >"$kafka_home/config/log4j2.properties" <<'PROPS'
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
PROPS
  cat >"$kafka_home/config/tools-log4j2.properties" <<'PROPS'
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = ERR
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
PROPS
}

kafka_cluster_id() { # 16 random bytes, URL-safe base64 without padding, not starting with '-'
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    case "$id" in -*) ;; *) echo "$id"; return ;; esac
  done
}

kafka_start() { # start the broker unless one answers; kafka_wait waits for it
  kafka_fetch
  if port_open "$kafka_port"; then return 0; fi
  kafka_stop # a broker of ours that is not answering (still starting, or wedged): start afresh
  mkdir -p "$kafka_state"
  kafka_config
  rm -rf "$kafka_state/data"
  kafka_tool kafka.tools.StorageTool format --standalone --cluster-id "$(kafka_cluster_id)" \
    --config "$kafka_state/server.properties" >"$kafka_state/format.log" 2>&1 \
    || { log "formatting Kafka's storage failed:"; tail -20 "$kafka_state/format.log" >&2; return 1; }
  nohup java -Djava.awt.headless=true -Xms256m -Xmx512m \
    -Dlog4j2.configurationFile="$kafka_home/config/log4j2.properties" \
    -cp "$kafka_home/jars/*" kafka.Kafka "$kafka_state/server.properties" \
    >"$kafka_state/kafka.log" 2>&1 </dev/null &
  echo $! >"$kafka_state/kafka.pid"
}

kafka_wait() { # until the broker serves requests: listening, then a topic listing succeeds
  local deadline=$((SECONDS + kafka_wait_seconds)) pid
  mkdir -p "$kafka_state" # also when `up` reuses a broker it did not start
  pid="$(cat "$kafka_state/kafka.pid" 2>/dev/null || true)"
  until port_open "$kafka_port"; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "Kafka exited while starting; the end of $kafka_state/kafka.log:"
      tail -20 "$kafka_state/kafka.log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "Kafka on $kafka_port did not come up within ${kafka_wait_seconds} s; see $kafka_state/kafka.log"
      return 1
    fi
    sleep 0.2
  done
  until kafka_tool_timeout=$((deadline - SECONDS > 10 ? deadline - SECONDS : 10)) \
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$kafka_port" --list \
    >/dev/null 2>"$kafka_state/ready.log"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "Kafka on $kafka_port does not answer requests; see $kafka_state/ready.log and kafka.log"
      tail -5 "$kafka_state/ready.log" >&2
      return 1
    fi
    sleep 1
  done
}

# --- Kafka Connect and Debezium (fetched only; the tests start their own workers) ----------------
connect_pom() { # connect_pom <dir> <artifactId> <dependencies xml>
  mkdir -p "$1/maven"
  cat >"$1/maven/pom.xml" <<POM
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.chatcore</groupId>
  <artifactId>$2</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
$3
  </dependencies>
</project>
POM
}

connect_fetch() {
  if [ -f "$connect_home/jars/.complete" ] && [ -f "$connect_home/debezium/jars/.complete" ]; then
    return 0
  fi
  ensure_apt java default-jre-headless
  ensure_apt mvn maven
  log "fetching Kafka Connect $kafka_version and Debezium $debezium_version with Maven into $connect_home (first run only)"
  local dep='<dependency><groupId>org.apache.kafka</groupId><artifactId>%s</artifactId><version>%s</version></dependency>'
  # The worker: Connect's runtime, its JSON converter and Kafka's own transforms (ValueToKey,
  # ExtractField), with log4j 2 behind SLF4J like the broker.
  connect_pom "$connect_home" connect-jars "$(printf "$dep" connect-runtime "$kafka_version" connect-json \
    "$kafka_version" connect-transforms "$kafka_version")
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$kafka_log4j_version</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$kafka_log4j_version</version></dependency>"
  maven_jars "$connect_home"
  # The connector, as a plugin: its own dependencies, none of Kafka's (the worker provides those).
  connect_pom "$connect_home/debezium" debezium-jars "
    <dependency><groupId>io.debezium</groupId><artifactId>debezium-connector-mongodb</artifactId><version>$debezium_version</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>*</artifactId></exclusion></exclusions>
    </dependency>"
  maven_jars "$connect_home/debezium"
  rm -rf "$connect_home/plugins"
  mkdir -p "$connect_home/plugins"
  cp -r "$connect_home/debezium/jars" "$connect_home/plugins/debezium-connector-mongodb"
  connect_config
}

connect_config() { # a log4j 2 configuration for workers: INFO to stdout, the chatty parts at WARN
  mkdir -p "$connect_home/config"
  cat >"$connect_home/config/log4j2.properties" <<'PROPS'
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.jetty.name = org.eclipse.jetty
logger.jetty.level = WARN
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
PROPS
}

connect_run() { # connect_run <worker properties> <connector properties...>: a standalone worker
  local worker="$1"; shift
  local extra
  extra="$(dirname "$worker")/.$(basename "$worker").run"
  cat "$worker" >"$extra"
  if ! grep -q '^plugin\.path=' "$worker"; then echo "plugin.path=$connect_home/plugins" >>"$extra"; fi
  exec java -Djava.awt.headless=true -Xms128m -Xmx768m -XX:+UseSerialGC \
    -Dlog4j2.configurationFile="$connect_home/config/log4j2.properties" \
    -cp "$connect_home/jars/*" org.apache.kafka.connect.cli.ConnectStandalone "$extra" "$@"
}

# --- nginx -------------------------------------------------------------------------------------
nginx_bin() { # the nginx binary's path: it lives in /usr/sbin, which a user's PATH may lack
  command -v nginx 2>/dev/null && return 0
  if [ -x /usr/sbin/nginx ]; then echo /usr/sbin/nginx; return 0; fi
  return 1
}

nginx_masters() { # pids of the running nginx master processes, whoever started them
  local dir
  for dir in /proc/[0-9]*; do
    case "$(tr '\0' ' ' 2>/dev/null <"$dir/cmdline")" in
      "nginx: master process"*) echo "${dir#/proc/}" ;;
    esac
  done
}

nginx_install() { # Debian's nginx unless there is one, without leaving its service running
  nginx_bin >/dev/null && return 0
  local before pid
  before=" $(nginx_masters | tr '\n' ' ') "
  ensure_apt nginx nginx
  # The package's postinst starts its service unless policy-rc.d denies it; one that came up
  # during the install would hold port 80 and outlive every test: stop it (and only it).
  for pid in $(nginx_masters); do
    case "$before" in *" $pid "*) continue ;; esac
    log "stopping the nginx service that the package started (pid $pid); the tests run their own"
    stop_pid "$pid" "the packaged nginx service" 10
  done
  nginx_bin >/dev/null || { log "nginx is still missing after installing Debian's package"; return 1; }
}

# --- MongoDB (mongo-java-server) ---------------------------------------------------------------
mongo_own_uri() { echo "mongodb://127.0.0.1:$mongo_port/?directConnection=true"; }

mongo_external() { # CHATCORE_TEST_MONGO_URI names a server other than ours: use that one
  [ -n "${CHATCORE_TEST_MONGO_URI:-}" ] && [ "$CHATCORE_TEST_MONGO_URI" != "$(mongo_own_uri)" ]
}

mongo_uri() { if mongo_external; then echo "$CHATCORE_TEST_MONGO_URI"; else mongo_own_uri; fi; }

mongo_fetch() {
  # A cache fetched before the H2 backend (the soak's persistent MongoDB) was added lacks its jar.
  if [ -f "$mongo_home/jars/.complete" ] \
    && ! compgen -G "$mongo_home/jars/mongo-java-server-h2-backend-*.jar" >/dev/null; then
    rm -f "$mongo_home/jars/.complete"
  fi
  if [ -f "$mongo_home/jars/.complete" ]; then return 0; fi
  with_cache_lock mongo_download
}

mongo_download() { # under the cache lock
  if [ -f "$mongo_home/jars/.complete" ]; then return 0; fi
  ensure_apt java default-jre-headless
  ensure_apt mvn maven
  log "fetching mongo-java-server $mongo_version jars with Maven into $mongo_home/jars (first run only)"
  mkdir -p "$mongo_home/maven"
  # slf4j-simple gives the server's SLF4J logging somewhere to go (stderr, into mongo.log).
  cat >"$mongo_home/maven/pom.xml" <<POM
<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.chatcore</groupId>
  <artifactId>mongo-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>de.bwaldvogel</groupId><artifactId>mongo-java-server</artifactId><version>$mongo_version</version>
    </dependency>
    <dependency>
      <groupId>de.bwaldvogel</groupId><artifactId>mongo-java-server-memory-backend</artifactId><version>$mongo_version</version>
    </dependency>
    <dependency>
      <groupId>de.bwaldvogel</groupId><artifactId>mongo-java-server-h2-backend</artifactId><version>$mongo_version</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>$mongo_slf4j_version</version>
    </dependency>
  </dependencies>
</project>
POM
  maven_jars "$mongo_home"
}

mongo_launcher_sum() { sha256sum "$root/scripts/mongo/MongoLauncher.java" | cut -c1-16; }
mongo_classes() { echo "$mongo_home/classes-$(mongo_launcher_sum)"; } # one per launcher source

mongo_compile() { # this checkout's launcher into $(mongo_classes), once per source
  local src="$root/scripts/mongo/MongoLauncher.java" classes
  classes="$(mongo_classes)"
  if [ -f "$classes/.complete" ]; then return 0; fi
  ensure_apt javac default-jdk-headless
  log "compiling $src"
  rm -rf "$classes.partial.$$"
  mkdir -p "$classes.partial.$$"
  javac -nowarn -d "$classes.partial.$$" -cp "$mongo_home/jars/*" "$src" >&2
  touch "$classes.partial.$$/.complete"
  rm -rf "$classes"
  mv "$classes.partial.$$" "$classes"
}

mongo_ping() { # a driver's real handshake and a `ping` command, not just an open port
  # (os._exit: PyMongo's monitor threads would hold a normal exit back by half a second)
  "$venv/bin/python" -c 'import os, sys, pymongo
pymongo.MongoClient(sys.argv[1], directConnection=True, serverSelectionTimeoutMS=2000).admin.command("ping")
os._exit(0)' "$(mongo_uri)"
}

mongo_pid() { # the pid of the server `up` started, if it is still running
  local pid
  pid="$(cat "$mongo_state/mongo.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qa MongoLauncher "/proc/$pid/cmdline" 2>/dev/null \
    && echo "$pid"
}

mongo_stop() {
  local pid
  if pid="$(mongo_pid)"; then stop_pid "$pid" mongo-java-server 10; fi
  rm -f "$mongo_state/mongo.pid"
}

mongo_start() { # start the server unless one answers (or another is named); mongo_wait waits
  ensure_venv pymongo pymongo
  if mongo_external; then return 0; fi
  mongo_fetch
  mongo_compile
  if mongo_pid >/dev/null && [ "$(cat "$mongo_state/launcher.sum" 2>/dev/null)" != "$(mongo_launcher_sum)" ]; then
    log "restarting mongo-java-server for the new launcher (its data is lost)"
    mongo_stop
  fi
  if port_open "$mongo_port"; then return 0; fi
  mongo_stop # one of ours that is not answering: start afresh
  mkdir -p "$mongo_state"
  nohup java -Djava.awt.headless=true -Xms64m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dorg.slf4j.simpleLogger.showDateTime=true \
    -Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd'T'HH:mm:ss.SSS" \
    -cp "$(mongo_classes):$mongo_home/jars/*" MongoLauncher "$mongo_port" \
    >"$mongo_state/mongo.log" 2>&1 </dev/null &
  echo $! >"$mongo_state/mongo.pid"
  mongo_launcher_sum >"$mongo_state/launcher.sum"
}

mongo_wait() { # until the server answers a driver's handshake and a `ping`
  local deadline=$((SECONDS + mongo_wait_seconds)) pid
  mkdir -p "$mongo_state"
  pid="$(cat "$mongo_state/mongo.pid" 2>/dev/null || true)"
  until mongo_external || port_open "$mongo_port"; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      log "mongo-java-server exited while starting; the end of $mongo_state/mongo.log:"
      tail -20 "$mongo_state/mongo.log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "MongoDB on $mongo_port did not come up within ${mongo_wait_seconds} s; see $mongo_state/mongo.log"
      return 1
    fi
    sleep 0.1
  done
  until mongo_ping >/dev/null 2>"$mongo_state/ready.log"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "MongoDB at $(mongo_uri) does not answer a ping; see $mongo_state/ready.log"
      tail -5 "$mongo_state/ready.log" >&2
      return 1
    fi
    sleep 0.2
  done
}

print_env() {
  cat <<ENV
export CHATCORE_TEST_REDIS=redis://127.0.0.1:$redis_port
export CHATCORE_TEST_REDIS_SERVER=$(command -v redis-server || echo redis-server)
export CHATCORE_TEST_SMTP=127.0.0.1:$smtp_port
export CHATCORE_TEST_SMTP_MAILDIR=$state/smtp/maildir
export CHATCORE_TEST_KAFKA=127.0.0.1:$kafka_port
export CHATCORE_TEST_KAFKA_HOME=$kafka_home
export CHATCORE_TEST_MONGO_URI=$(mongo_uri)
export CHATCORE_TEST_NGINX=$(nginx_bin || echo nginx)
export CHATCORE_TEST_CONNECT_HOME=$connect_home
export CHATCORE_TEST_CONNECT_PORT=$connect_port
ENV
  # Lets a test run an emulator of its own (to stop and restart it): java -cp "$CP" MongoLauncher <port>
  if ! mongo_external; then
    echo "export CHATCORE_TEST_MONGO_CLASSPATH='$(mongo_classes):$mongo_home/jars/*'"
  fi
}

case "${1:-}" in
  up)
    claim_ports
    kafka_start # the slowest to boot, so it starts first and the others come up meanwhile
    mongo_start
    redis_up
    smtp_up
    nginx_install
    connect_fetch
    mongo_wait
    kafka_wait
    print_env
    ;;
  down)
    redis_down
    smtp_down
    kafka_stop
    mongo_stop
    ;;
  status)
    if redis_ping; then
      echo "redis: up on 127.0.0.1:$redis_port$(whose "$redis_port" "$state/redis/redis.pid")"
    else
      echo "redis: down"
    fi
    if port_open "$smtp_port"; then
      echo "smtp: up on 127.0.0.1:$smtp_port$(whose "$smtp_port" "$state/smtp/smtp.pid")"
    else
      echo "smtp: down"
    fi
    if port_open "$kafka_port"; then
      echo "kafka: up on 127.0.0.1:$kafka_port (Kafka $kafka_version$(pid="$(kafka_pid)" && echo ", pid $pid"))$(whose "$kafka_port" "$kafka_state/kafka.pid")"
    else
      echo "kafka: down"
    fi
    if mongo_external; then
      echo "mongo: not managed here, CHATCORE_TEST_MONGO_URI=$CHATCORE_TEST_MONGO_URI"
    elif port_open "$mongo_port"; then
      echo "mongo: up on 127.0.0.1:$mongo_port (mongo-java-server $mongo_version$(pid="$(mongo_pid)" && echo ", pid $pid"))$(whose "$mongo_port" "$mongo_state/mongo.pid")"
    else
      echo "mongo: down"
    fi
    if nginx_path="$(nginx_bin)"; then
      echo "nginx: installed, $nginx_path ($("$nginx_path" -v 2>&1 | sed 's/^nginx version: //')); not a service, the tests start their own"
    else
      echo "nginx: not installed"
    fi
    ;;
  env)
    print_env
    ;;
  kafka-run)
    shift
    kafka_fetch
    [ -f "$kafka_home/config/tools-log4j2.properties" ] || kafka_config
    kafka_tool "$@"
    ;;
  connect-run)
    if [ "$#" -lt 3 ]; then
      echo "usage: $0 connect-run <worker properties> <connector properties...>" >&2
      exit 2
    fi
    shift
    connect_fetch
    connect_run "$@"
    ;;
  nginx-run)
    if [ "$#" -ne 3 ]; then
      echo "usage: $0 nginx-run <prefix dir> <main conf>" >&2
      exit 2
    fi
    nginx_install
    exec "$(nginx_bin)" -p "$2" -c "$3" -g 'daemon off;'
    ;;
  *)
    echo "usage: $0 up|down|status|env|kafka-run <main class> [args...]|connect-run <worker> <connector...>|nginx-run <prefix dir> <main conf>" >&2
    exit 2
    ;;
esac
