# fleet.bash: what the end-to-end fleet tests (tests/integration/test_fleet_*.sh) share.
# Sourced, never run. It starts the real daemons — agentfleet-simagent, agentfleet-coordinator,
# agentfleet-worker — with the claims example's config on the real Kafka broker and Redis
# server the project's scripts started, each test with a topic prefix, consumer groups, HTTP
# ports and a scratch folder of its own, so tests never see each other's messages. A trap
# stops every process the test started (also on failure), and a failure prints the tails of
# the daemons' logs, because the log of the process that misbehaved is what one reads first.
# When the daemons are built with AF_SANITIZE=ON, a sanitizer report in any of their logs
# ($WORK/*.log and *.err: a test keeps other programs' stderr there to have it checked too)
# fails the test. FLEET_KEEP_WORK=1 keeps the scratch folder and its logs.
#
# Needs AF_TEST_KAFKA, AF_TEST_REDIS_PORT and AF_BINARY_DIR; fleet_init prints SKIP and exits 0
# only when AF_TEST_KAFKA (or AF_TEST_REDIS_PORT) is unset.
#
# A test that must stop or kill a service (the shared one serves the tests after it) runs on a
# private stack instead: fleet_init_private starts a Kafka broker and a Redis server of its
# own with scripts/services, as a user would, on free ports with the run folder in $WORK/stack,
# points everything fleet_init sets at them, and the cleanup stops them (also on failure).
# It skips under the same condition as fleet_init, so one test suite run has one switch.
#
#   fleet_init NAME                       env, topics, trap; sets WORK, RUN, PREFIX, ports
#   fleet_init_private NAME               the same on a private Kafka + Redis (STACK_* below)
#   fleet_stack CMD                       scripts/services CMD (start, stop, ...) on that stack
#   fleet_setup NAME                      only folders, trap, RUN (for tests without services)
#   fleet_start NAME BINARY [ARGS...]     start a daemon in the background, log in $WORK/NAME.log
#   fleet_start_simagent / fleet_start_coordinator [ARGS...]   and wait until they answer
#   fleet_start_worker NAME [ARGS...]     a worker with worker.id NAME-$RUN
#   fleet_wait_for SECONDS WHAT CMD...    poll CMD every 0.2 s until it succeeds, else fail
#   fleet_fail MSG                        print MSG and the logs' tails, exit 1
#   fleet_json_field JSON KEY             a top-level scalar of a one-line JSON object
#   fleet_sim_stats                       the simagent's GET /stats (JSON)
#   fleet_leases_of OWNER                 how many live leases OWNER holds in Redis
#   fleet_drive_summary PID KEY:VALUE...  wait for a drive; it exits 0 and its summary (in
#                                         SUMMARY) has every KEY at VALUE

# Generous limits: the tests must pass on a loaded 2-core machine.
FLEET_READY_S=${FLEET_READY_S:-60}

fleet_init() {
        fleet_skip_without_services
        fleet_setup "$1"
        fleet_env
}

fleet_skip_without_services() {
        if [[ -z "${AF_TEST_KAFKA:-}" || -z "${AF_TEST_REDIS_PORT:-}" ]]; then
                echo "SKIP: AF_TEST_KAFKA and AF_TEST_REDIS_PORT are not set"
                exit 0
        fi
}

# fleet_init_private NAME: fleet_init on a stack of the test's own. Sets STACK_DIR (the run
# folder, holding kafka/kafka.pid and the logs), STACK_KAFKA_PORT, STACK_CONTROLLER_PORT and
# STACK_REDIS_PORT, and AF_TEST_KAFKA / AF_TEST_REDIS_PORT to the private services, so every
# helper below (topics, fleet_redis, cleanup) works on them unchanged.
fleet_init_private() {
        fleet_skip_without_services
        fleet_setup "$1"
        STACK_DIR="$WORK/stack"
        STACK_KAFKA_PORT=$(fleet_free_port)
        STACK_CONTROLLER_PORT=$(fleet_free_port)
        STACK_REDIS_PORT=$(fleet_free_port)
        while [[ "$STACK_CONTROLLER_PORT" == "$STACK_KAFKA_PORT" ]]; do
                STACK_CONTROLLER_PORT=$(fleet_free_port)
        done
        while [[ "$STACK_REDIS_PORT" == "$STACK_KAFKA_PORT" ||
                 "$STACK_REDIS_PORT" == "$STACK_CONTROLLER_PORT" ]]; do
                STACK_REDIS_PORT=$(fleet_free_port)
        done
        FLEET_STACK=1
        fleet_stack start >"$WORK/stack-start.err" 2>&1 ||
                fleet_fail "starting the private Kafka + Redis (scripts/services start)"
        AF_TEST_KAFKA="127.0.0.1:$STACK_KAFKA_PORT"
        AF_TEST_REDIS_PORT=$STACK_REDIS_PORT
        fleet_env
}

# fleet_stack CMD...: scripts/services on the private stack. Its topics (prefix agentfleet.)
# (one partition each) are not the test's; fleet_env creates its own as usual. A small heap: the broker
# shares the machine with the shared one and the daemons.
fleet_stack() {
        AF_KAFKA_PORT=$STACK_KAFKA_PORT AF_KAFKA_CONTROLLER_PORT=$STACK_CONTROLLER_PORT \
        AF_REDIS_PORT=$STACK_REDIS_PORT AF_RUN_DIR=$STACK_DIR AF_BUILD_DIR=$BIN \
        AF_KAFKA_ADMIN="$BIN/af-kafka-admin" AF_PARTITIONS=1 \
        AF_KAFKA_HEAP="${FLEET_STACK_HEAP:--Xms128m -Xmx512m}" AF_STOP_TIMEOUT=20 \
                "$SRC/scripts/services" "$@"
}

# fleet_env: point every process at AF_TEST_KAFKA / AF_TEST_REDIS_PORT with this test's
# topics, groups and ports, and create the topics.
fleet_env() {
        command -v redis-cli >/dev/null || { echo "FAIL: redis-cli is needed"; exit 1; }

        API_PORT=$(fleet_free_port)
        SIM_PORT=$(fleet_free_port)
        while [[ "$SIM_PORT" == "$API_PORT" ]]; do SIM_PORT=$(fleet_free_port); done
        API_URL="http://127.0.0.1:$API_PORT"
        SIM_URL="http://127.0.0.1:$SIM_PORT"

        # Every process reads the example config; the environment points it at this test's
        # services, topics, groups and ports (the same way scripts/demo does).
        export AGENTFLEET_CONFIG="$CONFIG"
        export AGENTFLEET_KAFKA_BOOTSTRAP_SERVERS="$AF_TEST_KAFKA"
        export AGENTFLEET_TOPIC_PREFIX="$PREFIX"
        export AGENTFLEET_REDIS_PORT="$AF_TEST_REDIS_PORT"
        export AGENTFLEET_HTTP_PORT="$API_PORT"
        export AGENTFLEET_SIMAGENT_PORT="$SIM_PORT"
        export AGENTFLEET_SIMAGENT_URL="$SIM_URL"
        export AGENTFLEET_COORDINATOR_GROUP_ID="$FLEET_NAME-coord-$RUN"
        export AGENTFLEET_WORKER_GROUP_ID="$FLEET_NAME-workers-$RUN"
        export AGENTFLEET_CLI_API_URL="$API_URL"
        export AGENTFLEET_INTAKE_KEY="$FLEET_NAME-intake-secret-$RUN"
        export AGENTFLEET_TOKEN="demo-intake-token"
        export AGENTFLEET_LOG_LEVEL=info

        "$BIN/af-kafka-admin" create-topics --bootstrap "$AF_TEST_KAFKA" --prefix "$PREFIX" \
                --partitions 4 >"$WORK/topics.out" 2>&1 || fleet_fail "creating topics"
        FLEET_TOPICS=1
}

# fleet_setup NAME: what every test needs, services or not: the source and build folders,
# a scratch folder, the cleanup trap, a run id and the topic prefix.
fleet_setup() {
        FLEET_NAME=$1
        SRC="${AF_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
        BIN="${AF_BINARY_DIR:?AF_BINARY_DIR must name the build folder}"
        local b
        for b in agentfleet agentfleet-coordinator agentfleet-worker agentfleet-simagent \
                 af-kafka-admin; do
                [[ -x "$BIN/$b" ]] || { echo "FAIL: $BIN/$b is not built"; exit 1; }
        done
        command -v curl >/dev/null || { echo "FAIL: curl is needed"; exit 1; }

        WORK=$(mktemp -d "${TMPDIR:-/tmp}/$FLEET_NAME.XXXXXX")
        declare -gA FLEET_PIDS=()
        trap fleet_cleanup EXIT

        RUN=$(date +%s)-$$
        PREFIX="$FLEET_NAME-$RUN."
        CONFIG="$SRC/examples/claims/agentfleet.yaml"
        CLAIMS="$SRC/examples/claims/claims.jsonl"
}

# A loopback port nothing listens on now (checked by a failing connect), below the kernel's
# ephemeral range (32768 and up on Linux) so that no outgoing connection holds it.
fleet_free_port() {
        local p
        while :; do
                p=$((20000 + RANDOM % 12000))
                (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
}

fleet_cleanup() {
        local name pid
        # SIGTERM first (daemons drain and release leases), SIGKILL whatever outlives 20 s.
        for name in "${!FLEET_PIDS[@]}"; do
                kill -TERM "${FLEET_PIDS[$name]}" 2>/dev/null || true
        done
        for _ in $(seq 1 100); do
                local alive=0
                for name in "${!FLEET_PIDS[@]}"; do
                        kill -0 "${FLEET_PIDS[$name]}" 2>/dev/null && alive=1
                done
                [[ $alive == 0 ]] && break
                sleep 0.2
        done
        for name in "${!FLEET_PIDS[@]}"; do
                pid=${FLEET_PIDS[$name]}
                kill -KILL "$pid" 2>/dev/null || true
                # (braces: bash reports a child it already reaped outside the redirection)
                { wait "$pid"; } 2>/dev/null || true
        done
        # Built with AF_SANITIZE=ON, a daemon reports memory errors, leaks and undefined
        # behaviour in its log (leaks only as it exits): any such report fails the test.
        local sanitized=0 f
        for f in "$WORK"/*.log "$WORK"/*.err; do
                [[ -f "$f" ]] || continue
                if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$f"; then
                        echo "FAIL: sanitizer report in $(basename "$f"):" >&2
                        grep -E -A 15 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$f" |
                                head -n 40 >&2
                        sanitized=1
                fi
        done
        # A private stack goes after the daemons that used it; its logs stay in $WORK/stack.
        if [[ "${FLEET_STACK:-0}" == 1 ]]; then
                fleet_stack stop >>"$WORK/stack-stop.err" 2>&1 ||
                        echo "note: the private stack in $STACK_DIR did not stop cleanly" >&2
                FLEET_TOPICS=0 # they went with the broker
        fi
        # FLEET_KEEP_WORK=1 keeps the logs (e.g. to read sanitizer reports of a debug build)
        # and the test's topics; otherwise both go, so repeated runs do not pile up
        # partitions on a long-lived broker.
        if [[ "${FLEET_KEEP_WORK:-0}" == 1 ]]; then
                echo "logs and topics ($PREFIX*) kept in $WORK" >&2
        else
                if [[ "${FLEET_TOPICS:-0}" == 1 ]]; then
                        "$BIN/af-kafka-admin" delete-topics --bootstrap "$AF_TEST_KAFKA" \
                                --prefix "$PREFIX" >/dev/null 2>&1 ||
                                echo "note: topics $PREFIX* not deleted" >&2
                fi
                [[ -z "${WORK:-}" ]] || rm -rf "$WORK"
        fi
        [[ $sanitized == 0 ]] || exit 1
}

fleet_fail() {
        local f
        echo "FAIL: $*" >&2
        for f in "$WORK"/*.log "$WORK"/*.err; do
                [[ -s "$f" ]] || continue
                echo "--- $(basename "$f") (last lines)" >&2
                tail -n 20 "$f" >&2
        done
        exit 1
}

# fleet_start NAME BINARY [ARGS...]: start BINARY from the build folder in the background.
fleet_start() {
        local name=$1 bin=$2
        shift 2
        "$BIN/$bin" --config "$CONFIG" "$@" >"$WORK/$name.log" 2>&1 &
        FLEET_PIDS[$name]=$!
}

# fleet_stopped NAME: forget a process the test ended itself (so cleanup leaves it alone).
fleet_stopped() {
        unset "FLEET_PIDS[$1]"
}

fleet_alive() {
        kill -0 "${FLEET_PIDS[$1]}" 2>/dev/null
}

# fleet_wait_for SECONDS WHAT CMD...: poll CMD until it succeeds; fail after SECONDS.
fleet_wait_for() {
        local secs=$1 what=$2 i
        shift 2
        for ((i = 0; i < secs * 5; i++)); do
                "$@" && return 0
                sleep 0.2
        done
        fleet_fail "timed out after ${secs}s waiting for $what"
}

fleet_http_ok() {
        curl -fsS -o /dev/null --max-time 5 "$1" 2>/dev/null
}

# fleet_answers NAME URL: URL answers 200; fails the test at once when NAME has exited.
fleet_answers() {
        fleet_alive "$1" || fleet_fail "$1 exited before it answered at $2"
        fleet_http_ok "$2"
}

fleet_start_simagent() {
        fleet_start simagent agentfleet-simagent "$@"
        fleet_wait_for "$FLEET_READY_S" "the simagent at $SIM_URL" \
                fleet_answers simagent "$SIM_URL/healthz"
}

fleet_start_coordinator() {
        fleet_start coordinator agentfleet-coordinator "$@"
        fleet_wait_for "$FLEET_READY_S" "the coordinator at $API_URL" \
                fleet_answers coordinator "$API_URL/readyz"
}

# fleet_start_worker NAME [ARGS...]: a worker whose id (lease owner) is NAME-$RUN. Short
# consumer session timeouts let the group notice a dead member within the test's time.
fleet_start_worker() {
        local name=$1
        shift
        fleet_start "$name" agentfleet-worker --set "worker.id=$name-$RUN" \
                --set kafka.session.timeout.ms=6000 --set kafka.heartbeat.interval.ms=500 "$@"
}

# fleet_worker_joined NAME: the worker's consumer got its partitions (its log says so).
fleet_worker_joined() {
        fleet_alive "$1" || fleet_fail "$1 exited"
        grep -q 'partitions assigned: [1-9]' "$WORK/$1.log" 2>/dev/null
}

# One-line JSON object -> a top-level scalar (string without quotes, number, null).
# jq is not a dependency; the fields read here are flat and never contain commas.
fleet_json_field() {
        local v
        v=$(printf '%s' "$1" | grep -o "\"$2\":[^,}]*" | head -n1 | cut -d: -f2-)
        v=${v#\"}
        printf '%s' "${v%\"}"
}

fleet_sim_stats() {
        curl -fsS --max-time 10 "$SIM_URL/stats"
}

# fleet_sim_stat KEY: one counter of the simagent's /stats (empty when it does not answer).
fleet_sim_stat() {
        fleet_json_field "$(fleet_sim_stats 2>/dev/null)" "$1"
}

fleet_redis() {
        redis-cli -h 127.0.0.1 -p "$AF_TEST_REDIS_PORT" "$@"
}

# fleet_leases_of OWNER: the number of live leases whose value ends in ":OWNER" (the lease
# value is "<token>:<fence>:<owner>", libcommon/lease.c). One Redis round trip, so that the
# count is fresh when the caller acts on it (KEYS is fine on a test server).
fleet_leases_of() {
        fleet_redis --no-raw EVAL "local n = 0
for _, k in ipairs(redis.call('KEYS', 'af:{*}:lease')) do
  local v = redis.call('GET', k)
  if v and string.sub(v, -string.len(ARGV[1])) == ARGV[1] then n = n + 1 end
end
return n" 0 ":$1" | tr -dc 0-9
}

# fleet_drive_summary PID KEY:VALUE...: wait for the `agentfleet drive` PID (its stdout in
# $WORK/drive.out), then fail unless it exited 0 and its summary, the last line, has each
# KEY at VALUE. Sets SUMMARY.
fleet_drive_summary() {
        local pid=$1 rc kv got
        shift
        set +e
        wait "$pid"
        rc=$?
        set -e
        SUMMARY=$(tail -n1 "$WORK/drive.out")
        echo "drive: $SUMMARY"
        [[ "$rc" == 0 ]] || fleet_fail "drive exited $rc: $SUMMARY"
        for kv in "$@"; do
                got=$(fleet_json_field "$SUMMARY" "${kv%%:*}")
                [[ "$got" == "${kv#*:}" ]] ||
                        fleet_fail "drive summary: ${kv%%:*} is $got, want ${kv#*:}"
        done
}
