# Shared by bench/run and bench/soak (sourced, not run): the bench's environment (ports,
# configuration, credentials), its services, and the processes a phase starts and measures.
# The caller parses its options, exports AF_PARTITIONS, then calls bench_start_services.
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

AF_BENCH_WRAP="${AF_BENCH_WRAP:-}"

export AF_KAFKA_PORT="${AF_KAFKA_PORT:-9292}"
export AF_KAFKA_CONTROLLER_PORT="${AF_KAFKA_CONTROLLER_PORT:-9293}"
export AF_REDIS_PORT="${AF_REDIS_PORT:-6381}"
export AF_RUN_DIR="${AF_RUN_DIR:-$AF_ROOT/.run/bench}"
sim_port="${AF_BENCH_SIM_PORT:-8190}"
http_port="${AF_BENCH_HTTP_PORT:-8180}"
config="$AF_ROOT/examples/claims/agentfleet.yaml"
payloads="$AF_ROOT/examples/claims/claims.jsonl"
export AGENTFLEET_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$AF_KAFKA_PORT"
export AGENTFLEET_REDIS_PORT="$AF_REDIS_PORT"
export AGENTFLEET_HTTP_PORT="$http_port"
export AGENTFLEET_SIMAGENT_PORT="$sim_port"
export AGENTFLEET_SIMAGENT_URL="http://127.0.0.1:$sim_port"
export AGENTFLEET_CLI_API_URL="http://127.0.0.1:$http_port"
export AGENTFLEET_TOKEN="${AGENTFLEET_TOKEN:-demo-bench-token}"
export AGENTFLEET_INTAKE_KEY="${AGENTFLEET_INTAKE_KEY:-demo-intake-signing-key}"
export AGENTFLEET_LOG_LEVEL=warn

# Build (scripts/setup, into AF_BUILD_DIR), start the services unless they already run, and
# stop on exit whatever the run started. Sets bin, logs and own_services.
bench_start_services() {
  "$AF_ROOT/scripts/setup" >&2
  bin="${AF_BUILD_DIR:-$AF_ROOT/build}"
  # Services already running (a warm broker you keep between runs) are left running after.
  own_services=1
  "$AF_ROOT/scripts/services" status >/dev/null 2>&1 && own_services=0
  "$AF_ROOT/scripts/services" start >&2
  logs="$AF_RUN_DIR/logs"
  mkdir -p "$logs"
  trap 'stop_all; delete_bench_topics; [ "$own_services" = 0 ] || "$AF_ROOT/scripts/services" stop >/dev/null 2>&1 || true' EXIT
}

pids=()
phase_procs=()
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  phase_procs=()
}
# Each phase works on a fresh topic prefix (new_prefix): delete them all at the end, this
# run's and any an interrupted run left, so a broker kept warm between runs does not pile up
# partitions (and their preallocated index files) run after run.
delete_bench_topics() {
  local p
  "$bin/af-kafka-admin" list-topics --bootstrap "127.0.0.1:$AF_KAFKA_PORT" 2>/dev/null |
    grep -oE '^bench[0-9]+[a-z]+\.' | sort -u | while read -r p; do
      "$bin/af-kafka-admin" delete-topics --bootstrap "127.0.0.1:$AF_KAFKA_PORT" --prefix "$p" >/dev/null 2>&1 || true
    done
}

wait_http() {
  for _ in $(seq 1 150); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.2; done
  af_die "not ready: $1 (logs in $logs)"
}

# A fresh topic prefix per phase, so no phase sees another's messages or offsets.
new_prefix() {
  local p="bench$(date +%s%N | cut -c8-15)$1."
  AF_TOPIC_PREFIX="$p" "$AF_ROOT/scripts/services" topics >/dev/null
  echo "$p"
}

start_simagent() {   # latency ms
  "$bin/agentfleet-simagent" --config "$config" --set simagent.latency_ms="$1" \
    --set simagent.latency_jitter_ms=0 >"$logs/simagent.log" 2>&1 & pids+=($!)
  phase_procs+=("simagent=$!")
  wait_http "http://127.0.0.1:$sim_port/healthz"
}

worker_pids=()
start_workers() {   # count, concurrency
  worker_pids=()
  for i in $(seq 1 "$1"); do
    $AF_BENCH_WRAP "$bin/agentfleet-worker" --config "$config" --set "worker.id=bench-worker-$i" \
      --set worker.concurrency="$2" ${AF_BENCH_WORKER_SET:+$(printf -- '--set %s ' $AF_BENCH_WORKER_SET)} >"$logs/worker-$i.log" 2>&1 & pids+=($!); worker_pids+=($!)
    phase_procs+=("worker$i=$!")
  done
}

coordinator_pid=""
start_coordinator() {   # log label; ready once its API answers /readyz
  $AF_BENCH_WRAP "$bin/agentfleet-coordinator" --config "$config" >"$logs/coordinator-$1.log" 2>&1 & pids+=($!)
  coordinator_pid=$!
  phase_procs+=("coordinator=$!")
}

# Peak and current RSS of the workers, in MiB (sum over workers).
worker_rss() {
  local hwm=0 rss=0
  for p in "${worker_pids[@]}"; do
    hwm=$(( hwm + $(awk '/VmHWM/{print $2}' "/proc/$p/status") ))
    rss=$(( rss + $(awk '/VmRSS/{print $2}' "/proc/$p/status") ))
  done
  echo "$(( hwm / 1024 )) $(( rss / 1024 ))"
}

# CPU time (user + system, in clock ticks) a process has used so far; 0 once it is gone.
cpu_ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }   # fields after "(comm) "; utime and stime are fields 14 and 15 of the line
  set -- $s
  echo $(( ${12} + ${13} ))
}

kafka_pid() { tr -dc 0-9 <"$AF_RUN_DIR/kafka/kafka.pid" 2>/dev/null || true; }
redis_pid() { tr -dc 0-9 <"$AF_RUN_DIR/redis/redis.pid" 2>/dev/null || true; }

# The processes whose CPU a phase costs: label=pid pairs (the broker and Redis always).
cpu_procs() {
  echo "kafka=$(kafka_pid) redis=$(redis_pid) ${phase_procs[*]}"
}

# Every phase starts its load once its consumers' group has formed (stable, holding WANT
# partitions): the drive's clock runs from the first Task, and a group forming takes seconds,
# as long as a whole phase takes at the ceiling's rate.
settled() {   # group, want
  af_wait_group "127.0.0.1:$AF_KAFKA_PORT" "$1" "$2" 60 || af_die "group $1 did not form (logs in $logs)"
}
