#!/usr/bin/env bash
# test_cli_commands: the `agentfleet` CLI against a real fleet — agentfleet-coordinator,
# agentfleet-worker and agentfleet-simagent started here with the claims example's config, on
# the real Kafka broker and Redis server, with a topic prefix and consumer groups of its own.
#
# What it asserts, each through the CLI's output and its documented exit codes:
#   - a task cancelled before any worker runs never runs: watch ends "cancelled" (exit 1) and
#     the simagent saw no model call for it;
#   - submit over the API prints a task id; watch follows it to "succeeded" (exit 0); get
#     --json shows the agent's parsed decision and its token usage;
#   - submit --via-kafka (signed with the service key) is admitted and succeeds;
#   - list filters by status and type and pages with its cursor;
#   - unknown task → 4, bad token → 3, unknown type, malformed payload and Kafka settings
#     librdkafka refuses → 2, cancel of an ended task → 1, unreachable API → 5;
#   - drive: 40 claims half over the API, half to Kafka, nothing lost or duplicated (exit 0,
#     last stdout line a JSON summary).
#
# Needs AF_TEST_KAFKA, AF_TEST_REDIS_PORT and AF_BINARY_DIR; prints SKIP without the first two.
set -euo pipefail

if [[ -z "${AF_TEST_KAFKA:-}" || -z "${AF_TEST_REDIS_PORT:-}" ]]; then
        echo "SKIP: AF_TEST_KAFKA and AF_TEST_REDIS_PORT are not set"
        exit 0
fi
SRC="${AF_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
BIN="${AF_BINARY_DIR:?AF_BINARY_DIR must name the build folder}"
for b in agentfleet agentfleet-coordinator agentfleet-worker agentfleet-simagent af-kafka-admin; do
        [[ -x "$BIN/$b" ]] || { echo "FAIL: $BIN/$b is not built"; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/test_cli_commands.XXXXXX")
PIDS=()
cleanup() {
        for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
        for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
        [[ -z "${TOPICS_MADE:-}" ]] || "$BIN/af-kafka-admin" delete-topics \
                --bootstrap "$AF_TEST_KAFKA" --prefix "$PREFIX" >/dev/null 2>&1 || true
        rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
        echo "FAIL: $*" >&2
        for f in "$WORK"/*.log; do
                [[ -f "$f" ]] && { echo "--- $f (last lines)" >&2; tail -n 15 "$f" >&2; }
        done
        exit 1
}

# A port nothing listens on (a connect that fails); good enough on loopback.
free_port() {
        local p
        while :; do
                p=$((20000 + RANDOM % 40000))
                (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
}

# Run the CLI; sets RC and OUT (stdout), keeps stderr in $WORK/cli.err.
cli() {
        set +e
        OUT=$("$BIN/agentfleet" "$@" 2>"$WORK/cli.err")
        RC=$?
        set -e
}

expect_rc() {   # expect_rc WANT WHAT
        [[ "$RC" == "$1" ]] || fail "$2: exit $RC, want $1 (stderr: $(cat "$WORK/cli.err"))"
}

# jq is not a dependency: read one field of a JSON object with the CLI's own parser-free way.
json_field() {   # json_field JSON KEY -> the string or number value (top level)
        local v
        v=$(printf '%s' "$1" | grep -o "\"$2\":[^,}]*" | head -n1 | cut -d: -f2-)
        v=${v#\"}
        printf '%s' "${v%\"}"
}

RUN=$(date +%s)-$$
PREFIX="clicmd-$RUN."
API_PORT=$(free_port)
SIM_PORT=$(free_port)
export AGENTFLEET_CONFIG="$SRC/examples/claims/agentfleet.yaml"
export AGENTFLEET_KAFKA_BOOTSTRAP_SERVERS="$AF_TEST_KAFKA"
export AGENTFLEET_TOPIC_PREFIX="$PREFIX"
export AGENTFLEET_REDIS_PORT="$AF_TEST_REDIS_PORT"
export AGENTFLEET_HTTP_PORT="$API_PORT"
export AGENTFLEET_SIMAGENT_PORT="$SIM_PORT"
export AGENTFLEET_SIMAGENT_URL="http://127.0.0.1:$SIM_PORT"
export AGENTFLEET_SIMAGENT_LATENCY_MS=2
export AGENTFLEET_COORDINATOR_GROUP_ID="clicmd-coord-$RUN"
export AGENTFLEET_WORKER_GROUP_ID="clicmd-workers-$RUN"
export AGENTFLEET_CLI_API_URL="http://127.0.0.1:$API_PORT"
export AGENTFLEET_INTAKE_KEY="clicmd-intake-secret-$RUN"
export AGENTFLEET_TOKEN="demo-intake-token"
export AGENTFLEET_LOG_LEVEL=info
CLAIMS="$SRC/examples/claims/claims.jsonl"
head -n1 "$CLAIMS" >"$WORK/claim1.json"
sed -n 2p "$CLAIMS" >"$WORK/claim2.json"

"$BIN/af-kafka-admin" create-topics --bootstrap "$AF_TEST_KAFKA" --prefix "$PREFIX" \
        --partitions 3 >"$WORK/topics.log" 2>&1 || fail "creating topics"
TOPICS_MADE=1

"$BIN/agentfleet-simagent" --config "$AGENTFLEET_CONFIG" >"$WORK/simagent.log" 2>&1 &
PIDS+=($!)
"$BIN/agentfleet-coordinator" --config "$AGENTFLEET_CONFIG" >"$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null &&
           (exec 3<>"/dev/tcp/127.0.0.1/$SIM_PORT") 2>/dev/null; then
                break
        fi
        sleep 0.2
done
(exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null || fail "coordinator did not listen"

stat_chat() {   # the simagent's count of chat completions so far (GET /stats, no curl needed)
        local s
        s=$(exec 3<>"/dev/tcp/127.0.0.1/$SIM_PORT" && printf 'GET /stats HTTP/1.0\r\n\r\n' >&3 && cat <&3)
        json_field "${s#*$'\r\n\r\n'}" chat_completions
}

# ---- cancel before start: no worker runs yet -----------------------------------------------
cli submit --type claim.triage --payload-file "$WORK/claim2.json"
expect_rc 0 "submit (no worker yet)"
CANCEL_ID=$OUT
[[ "$CANCEL_ID" =~ ^[0-9A-Z]{26}$ ]] || fail "submit printed \"$CANCEL_ID\", not a task id"
cli cancel "$CANCEL_ID"
expect_rc 0 "cancel before start"

"$BIN/agentfleet-worker" --config "$AGENTFLEET_CONFIG" >"$WORK/worker.log" 2>&1 &
PIDS+=($!)

cli watch --max-wait 60s "$CANCEL_ID"
expect_rc 1 "watch of a task cancelled before start"
echo "$OUT" | tail -n1 | grep -q "cancelled" || fail "watch did not end on cancelled: $OUT"
CHAT=$(stat_chat)
[[ "$CHAT" == 0 ]] || fail "the task cancelled before start reached the model ($CHAT calls)"

# ---- submit over the API, watch, get ---------------------------------------------------------
cli submit --type claim.triage --payload-file "$WORK/claim1.json" --idempotency-key "clicmd-$RUN-1"
expect_rc 0 "submit"
ID=$OUT
[[ "$ID" =~ ^[0-9A-Z]{26}$ ]] || fail "submit printed \"$ID\", not a task id"
cli submit --type claim.triage --payload-file "$WORK/claim1.json" --idempotency-key "clicmd-$RUN-1"
expect_rc 0 "submit again with the same idempotency key"
[[ "$OUT" == "$ID" ]] || fail "same Idempotency-Key gave another task: $OUT vs $ID"

cli watch --max-wait 60s "$ID"
expect_rc 0 "watch"
echo "$OUT" | tail -n1 | grep -q "succeeded" || fail "watch's last line is not succeeded: $OUT"

cli get --json "$ID"
expect_rc 0 "get --json"
echo "$OUT" | grep -q '"status":"succeeded"' || fail "get: not succeeded: $OUT"
echo "$OUT" | grep -q '"decision":' || fail "get: no decision in the output: $OUT"
TOKENS=$(json_field "$OUT" prompt_tokens)
[[ "$TOKENS" =~ ^[0-9]+$ && "$TOKENS" -gt 0 ]] || fail "get: no prompt tokens recorded: $OUT"
cli get "$ID"
expect_rc 0 "get (table)"
echo "$OUT" | grep -Eq '^status +succeeded$' || fail "get table has no status line: $OUT"

cli get --json "$CANCEL_ID"
echo "$OUT" | grep -q '"status":"cancelled"' || fail "cancelled task reads: $OUT"

# ---- straight to Kafka, signed ---------------------------------------------------------------
cli submit --type claim.triage --via-kafka --key-id intake-svc --case-key "clicmd-$RUN-k" \
        --payload-file "$WORK/claim2.json" --json
expect_rc 0 "submit --via-kafka"
echo "$OUT" | grep -q '"topic":"'"$PREFIX"'requests"' || fail "via-kafka: wrong topic: $OUT"
KID=""
for _ in $(seq 1 100); do
        cli list --type claim.triage --limit 50
        KID=$(echo "$OUT" | awk -v k="clicmd-$RUN-k" '$5 == k { print $1; exit }')
        [[ -n "$KID" ]] && break
        sleep 0.2
done
[[ -n "$KID" ]] || fail "the Kafka-submitted task never appeared in list: $OUT"
cli watch --max-wait 60s "$KID"
expect_rc 0 "watch of the Kafka-submitted task"

# ---- list: filters and pages ----------------------------------------------------------------
cli list --status succeeded --type claim.triage --limit 1 --json
expect_rc 0 "list page 1"
[[ $(echo "$OUT" | grep -o '"status":"succeeded"' | wc -l) -ge 1 ]] || fail "list page 1: $OUT"
echo "$OUT" | grep -q '"status":"cancelled"' && fail "list --status succeeded shows a cancelled task"
CURSOR=$(json_field "$OUT" next_cursor)
[[ -n "$CURSOR" && "$CURSOR" != null ]] || fail "list page 1 has no next_cursor: $OUT"
FIRST=$OUT
cli list --status succeeded --type claim.triage --limit 1 --cursor "$CURSOR" --json
expect_rc 0 "list page 2"
[[ "$OUT" != "$FIRST" ]] || fail "list page 2 repeats page 1"
cli list
expect_rc 0 "list (table)"
echo "$OUT" | head -n1 | grep -q "^ID " || fail "list table has no header: $OUT"

# ---- exit codes -----------------------------------------------------------------------------
cli get 01ARZ3NDEKTSV4RRFFQ69G5FAV
expect_rc 4 "get of an unknown task"
cli get --token wrong-token "$ID"
expect_rc 3 "get with a bad token"
cli submit --type no.such.type --payload '{}'
expect_rc 2 "submit of an unknown type"
cli submit --type claim.triage --payload '{"claim_id":'
expect_rc 2 "submit of a malformed payload"
cli cancel "$ID"
expect_rc 1 "cancel of a finished task"
cli get --api-url "http://127.0.0.1:$(free_port)" "$ID"
expect_rc 5 "get from an unreachable API"
cli frobnicate
expect_rc 2 "unknown command"
# Each value is valid, the combination is not (the producer forces idempotence): a config
# error, found only when the producer is made.
cli submit --type claim.triage --via-kafka --key-id intake-svc --payload '{}' --set kafka.acks=1
expect_rc 2 "submit --via-kafka with Kafka settings librdkafka refuses"

# ---- drive -----------------------------------------------------------------------------------
cli drive --tasks 40 --type claim.triage --payloads "$CLAIMS" --api-share 0.5 --timeout 90s \
        --simagent "http://127.0.0.1:$SIM_PORT" --json
expect_rc 0 "drive"
SUMMARY=$(echo "$OUT" | tail -n1)
for kv in submitted:40 lost:0 duplicate_results:0 duplicate_side_effects:0 api_submitted:20 \
          kafka_submitted:20; do
        [[ "$(json_field "$SUMMARY" "${kv%%:*}")" == "${kv#*:}" ]] ||
                fail "drive summary: ${kv%%:*} is not ${kv#*:}: $SUMMARY"
done
SUCC=$(json_field "$SUMMARY" succeeded)
[[ "$SUCC" -eq 40 ]] || fail "drive: $SUCC of 40 succeeded: $SUMMARY"

echo "PASS: test_cli_commands"
