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
# The harness is lib/fleet.bash (scratch folder, topics, ports, daemons, cleanup, sanitizer
# reports); it prints SKIP without AF_TEST_KAFKA and AF_TEST_REDIS_PORT. Every CLI call's
# stderr is kept in $WORK/cli.log, so a sanitizer report from the CLI fails the test too.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/fleet.bash"

fleet_init clicmd
head -n1 "$CLAIMS" >"$WORK/claim1.json"
sed -n 2p "$CLAIMS" >"$WORK/claim2.json"

# Run the CLI; sets RC and OUT (stdout), keeps stderr in $WORK/cli.err and appends it to
# $WORK/cli.log (an ASan report exits 1, which some checks below expect: only the log tells).
cli() {
        set +e
        OUT=$("$BIN/agentfleet" "$@" 2>"$WORK/cli.err")
        RC=$?
        set -e
        { echo "\$ agentfleet $*"; cat "$WORK/cli.err"; } >>"$WORK/cli.log"
}

expect_rc() {   # expect_rc WANT WHAT
        [[ "$RC" == "$1" ]] ||
                fleet_fail "$2: exit $RC, want $1 (stderr: $(cat "$WORK/cli.err"))"
}

fleet_start_simagent --set simagent.latency_ms=2
fleet_start_coordinator

# ---- cancel before start: no worker runs yet -----------------------------------------------
cli submit --type claim.triage --payload-file "$WORK/claim2.json"
expect_rc 0 "submit (no worker yet)"
CANCEL_ID=$OUT
[[ "$CANCEL_ID" =~ ^[0-9A-Z]{26}$ ]] || fleet_fail "submit printed \"$CANCEL_ID\", not a task id"
cli cancel "$CANCEL_ID"
expect_rc 0 "cancel before start"

fleet_start_worker worker

cli watch --max-wait 60s "$CANCEL_ID"
expect_rc 1 "watch of a task cancelled before start"
echo "$OUT" | tail -n1 | grep -q "cancelled" || fleet_fail "watch did not end on cancelled: $OUT"
CHAT=$(fleet_sim_stat chat_completions)
[[ "$CHAT" == 0 ]] || fleet_fail "the task cancelled before start reached the model ($CHAT calls)"

# ---- submit over the API, watch, get ---------------------------------------------------------
cli submit --type claim.triage --payload-file "$WORK/claim1.json" --idempotency-key "clicmd-$RUN-1"
expect_rc 0 "submit"
ID=$OUT
[[ "$ID" =~ ^[0-9A-Z]{26}$ ]] || fleet_fail "submit printed \"$ID\", not a task id"
grep -q "was used before" "$WORK/cli.err" && fleet_fail "a first submit said it was a repeat"
cli submit --type claim.triage --payload-file "$WORK/claim1.json" --idempotency-key "clicmd-$RUN-1"
expect_rc 0 "submit again with the same idempotency key"
[[ "$OUT" == "$ID" ]] || fleet_fail "same Idempotency-Key gave another task: $OUT vs $ID"
grep -q "idempotency key clicmd-$RUN-1 was used before" "$WORK/cli.err" ||
        fleet_fail "a repeated submit did not say so: $(cat "$WORK/cli.err")"

cli watch --max-wait 60s "$ID"
expect_rc 0 "watch"
echo "$OUT" | tail -n1 | grep -q "succeeded" ||
        fleet_fail "watch's last line is not succeeded: $OUT"

cli get --json "$ID"
expect_rc 0 "get --json"
echo "$OUT" | grep -q '"status":"succeeded"' || fleet_fail "get: not succeeded: $OUT"
echo "$OUT" | grep -q '"decision":' || fleet_fail "get: no decision in the output: $OUT"
TOKENS=$(fleet_json_field "$OUT" prompt_tokens)
[[ "$TOKENS" =~ ^[0-9]+$ && "$TOKENS" -gt 0 ]] || fleet_fail "get: no prompt tokens recorded: $OUT"
cli get "$ID"
expect_rc 0 "get (table)"
echo "$OUT" | grep -Eq '^status +succeeded$' || fleet_fail "get table has no status line: $OUT"

cli get --json "$CANCEL_ID"
echo "$OUT" | grep -q '"status":"cancelled"' || fleet_fail "cancelled task reads: $OUT"

# ---- straight to Kafka, signed ---------------------------------------------------------------
cli submit --type claim.triage --via-kafka --key-id intake-svc --case-key "clicmd-$RUN-k" \
        --payload-file "$WORK/claim2.json" --json
expect_rc 0 "submit --via-kafka"
echo "$OUT" | grep -q '"topic":"'"$PREFIX"'requests"' || fleet_fail "via-kafka: wrong topic: $OUT"
KID=""
for _ in $(seq 1 100); do
        cli list --type claim.triage --limit 50
        KID=$(echo "$OUT" | awk -v k="clicmd-$RUN-k" '$5 == k { print $1; exit }')
        [[ -n "$KID" ]] && break
        sleep 0.2
done
[[ -n "$KID" ]] || fleet_fail "the Kafka-submitted task never appeared in list: $OUT"
cli watch --max-wait 60s "$KID"
expect_rc 0 "watch of the Kafka-submitted task"

# ---- list: filters and pages ----------------------------------------------------------------
cli list --status succeeded --type claim.triage --limit 1 --json
expect_rc 0 "list page 1"
[[ $(echo "$OUT" | grep -o '"status":"succeeded"' | wc -l) -ge 1 ]] ||
        fleet_fail "list page 1: $OUT"
echo "$OUT" | grep -q '"status":"cancelled"' &&
        fleet_fail "list --status succeeded shows a cancelled task"
CURSOR=$(fleet_json_field "$OUT" next_cursor)
[[ -n "$CURSOR" && "$CURSOR" != null ]] || fleet_fail "list page 1 has no next_cursor: $OUT"
FIRST=$OUT
cli list --status succeeded --type claim.triage --limit 1 --cursor "$CURSOR" --json
expect_rc 0 "list page 2"
[[ "$OUT" != "$FIRST" ]] || fleet_fail "list page 2 repeats page 1"
cli list
expect_rc 0 "list (table)"
echo "$OUT" | head -n1 | grep -q "^ID " || fleet_fail "list table has no header: $OUT"

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
cli get --api-url "http://127.0.0.1:$(fleet_free_port)" "$ID"
expect_rc 5 "get from an unreachable API"
cli frobnicate
expect_rc 2 "unknown command"
# Each value is valid, the combination is not (the producer forces idempotence): a config
# error, found only when the producer is made.
cli submit --type claim.triage --via-kafka --key-id intake-svc --payload '{}' --set kafka.acks=1
expect_rc 2 "submit --via-kafka with Kafka settings librdkafka refuses"

# ---- drive -----------------------------------------------------------------------------------
cli drive --tasks 40 --type claim.triage --payloads "$CLAIMS" --api-share 0.5 --timeout 90s \
        --simagent "$SIM_URL" --json
expect_rc 0 "drive"
SUMMARY=$(echo "$OUT" | tail -n1)
for kv in submitted:40 lost:0 duplicate_results:0 duplicate_side_effects:0 api_submitted:20 \
          kafka_submitted:20; do
        [[ "$(fleet_json_field "$SUMMARY" "${kv%%:*}")" == "${kv#*:}" ]] ||
                fleet_fail "drive summary: ${kv%%:*} is not ${kv#*:}: $SUMMARY"
done
SUCC=$(fleet_json_field "$SUMMARY" succeeded)
[[ "$SUCC" -eq 40 ]] || fleet_fail "drive: $SUCC of 40 succeeded: $SUMMARY"

echo "PASS: test_cli_commands"
