#!/usr/bin/env bash
# test_fleet_kafka_outage: the Kafka broker dies in the middle of a run (SIGKILL), stays down
# for a while and comes back; the fleet loses nothing, doubles nothing and recovers by itself.
# The shared test broker must survive for the tests after this one, so the test runs on a
# private Kafka + Redis started with scripts/services (fleet_init_private), as a user would.
# The real coordinator, two workers and the simulated agent (100 ms per call) run on it while
# `agentfleet drive` submits 200 claim.triage tasks at 8 per second, half over the API and half
# as signed requests straight to Kafka. Once results are coming in (the CRM saw 30 updates), the
# broker gets SIGKILL, stays down for OUTAGE_S (15) seconds while the drive keeps submitting,
# and is started again with `scripts/services start` on the same run folder (which must find
# its formatted storage, not format it again). A restarted single-node broker takes another
# ~15-20 s before it serves produce and group requests, so the fleet is without Kafka ~30 s.
#
# What an API submit gets during the outage (decided here, asserted below): the coordinator
# answers 202 only once Kafka acknowledged the task (acks=all); its producer keeps the messages
# queued while the broker is away (message.timeout.ms, 5 min by default), so a submit waits
# and is answered 202 once the broker is back -- accepted and never lost. A client that stops
# waiting retries under the same Idempotency-Key and gets 503 + Retry-After with a JSON
# {code, message} ("still being admitted; retry") until the first admission is published,
# then 202 with the same task (Idempotent-Replayed). Once coordinator.max_inflight submits
# wait, new ones are shed at once: 503 "overloaded" with Retry-After. The drive runs with a
# 10 s per-request timeout, so its API submits made during the outage take these paths
# (checked: the coordinator answered 503s), and it must retry them until they are accepted
# (cli/drive_submit.c retries retriable refusals until the run's --timeout). A probe submit
# made during the outage by curl, which waits, checks the first half: 202 (or a 503 with a
# JSON error and then 202 on a retry under the same key); either way its task succeeds.
#
# What it asserts:
#   - drive: submitted 200, succeeded 200, lost 0, duplicate_results 0,
#     duplicate_side_effects 0, failed 0, dead 0, submit_errors 0, exit 0;
#   - the coordinator answered some of the drive's submits 503 during the outage (shed, or
#     "still being admitted") and still admitted every task once;
#   - simagent /stats: duplicates 0, fenced 0;
#   - during the outage the coordinator's /readyz answers non-200 (503, "kafka" not ok), and
#     after the restart 200 again; the restart did not format the storage (same cluster id);
#   - the probe submit made during the outage behaves as said above;
#   - load shedding: the coordinator runs with coordinator.max_inflight MAX_INFLIGHT; once that
#     many API submits wait for the broker, a new one is answered at once 503 "overloaded"
#     with Retry-After (the submits it shed are retried by the drive like any 503);
#   - the coordinator and both workers are alive at the end, and none of them logged more
#     than FLOOD_MAX lines (a reconnect loop that floods the log is a bug too);
#   - no sanitizer report (fleet.bash, when built with AF_SANITIZE).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/fleet.bash"

fleet_init_private fleet-kafka-outage
TASKS=200
OUTAGE_S=${OUTAGE_S:-15}
FLOOD_MAX=2000

fleet_start_simagent --set simagent.latency_ms=100 --set simagent.latency_jitter_ms=50
MAX_INFLIGHT=40 # reached some 8 s into the outage: the probe (at 2 s) still waits
fleet_start_coordinator --set coordinator.max_inflight=$MAX_INFLIGHT
fleet_start_worker worker-a
fleet_start_worker worker-b
fleet_wait_for 90 "both workers to get partitions" \
        eval 'fleet_worker_joined worker-a && fleet_worker_joined worker-b'
curl -fsS -X POST "$SIM_URL/stats/reset" >/dev/null || fleet_fail "resetting the simagent's stats"

cluster_id() {
        sed -n 's/^cluster.id=//p' "$STACK_DIR/kafka/data/meta.properties"
}
CLUSTER_ID=$(cluster_id)
[[ -n "$CLUSTER_ID" ]] || fleet_fail "no cluster id in the private broker's meta.properties"

"$BIN/agentfleet" --timeout 10s drive --tasks "$TASKS" --type claim.triage --payloads "$CLAIMS" \
        --api-share 0.5 --key-id intake-svc --rate 8 --timeout 300s --linger 3s \
        --simagent "$SIM_URL" --json >"$WORK/drive.out" 2>"$WORK/drive.err" &
DRIVE=$!

# ---- the outage -----------------------------------------------------------------------------
applied_at_least() {
        [[ "$(fleet_sim_stat applied)" -ge "$1" ]] 2>/dev/null
}
fleet_wait_for 120 "30 side effects before the outage" applied_at_least 30
KAFKA_PID=$(tr -dc 0-9 <"$STACK_DIR/kafka/kafka.pid")
[[ -n "$KAFKA_PID" ]] && kill -0 "$KAFKA_PID" || fleet_fail "no live broker pid in $STACK_DIR"
kill -KILL "$KAFKA_PID"
while kill -0 "$KAFKA_PID" 2>/dev/null; do sleep 0.1; done
DOWN_AT=$SECONDS
echo "killed the broker (pid $KAFKA_PID) after $(fleet_sim_stat applied) side effects"

# A submit during the outage, over the API, under its own idempotency key; answered in the
# background (it may wait for the broker).
PROBE_KEY="outage-probe-$RUN"
PROBE_PAYLOAD=$(head -n1 "$CLAIMS" | sed 's/"claim_id":"[^"]*"/"claim_id":"CLM-OUTAGE-'"$RUN"'"/')
PROBE_BODY='{"type":"claim.triage","case_key":"'$PROBE_KEY'","payload":'$PROBE_PAYLOAD'}'
probe_submit() { # $1: output file; prints the HTTP status into $1.status
        curl -sS -o "$1" -w '%{http_code}' --max-time 180 -X POST "$API_URL/v1/tasks" \
                -H "Authorization: Bearer $AGENTFLEET_TOKEN" -H "Content-Type: application/json" \
                -H "Idempotency-Key: $PROBE_KEY" -d "$PROBE_BODY" >"$1.status" 2>"$1.err" || true
}
sleep 2 # the coordinator has noticed: its requests to the broker fail
probe_submit "$WORK/probe1.json" &
PROBE=$!

# /readyz: not ready while the broker is down (polled through the outage, at least once).
# Meanwhile, submits that give up after a second (each stays in flight at the coordinator,
# like the drive's) until one is shed: 503 "overloaded" at once, with Retry-After.
READYZ_DOWN="" SHED="" n=0
while ((SECONDS - DOWN_AT < OUTAGE_S)); do
        if [[ -z "$SHED" ]]; then
                n=$((n + 1))
                # A claim of its own: two tasks on one claim would be duplicate side effects.
                shed_payload=${PROBE_PAYLOAD//CLM-OUTAGE-/CLM-SHED-$n-}
                code=$(curl -s -o "$WORK/shed.json" -D "$WORK/shed.hdr" -w '%{http_code}'                         --max-time 1 -X POST "$API_URL/v1/tasks"                         -H "Authorization: Bearer $AGENTFLEET_TOKEN"                         -H "Content-Type: application/json" -H "Idempotency-Key: shed-$RUN-$n"                         -d '{"type":"claim.triage","case_key":"shed-'$n'","payload":'"$shed_payload"'}' ||
                        true)
                if [[ "$code" == 503 &&
                      "$(fleet_json_field "$(tr -d '\n' <"$WORK/shed.json")" code)" == overloaded ]]; then
                        SHED=$n
                        grep -qi '^retry-after: ' "$WORK/shed.hdr" ||
                                fleet_fail "503 overloaded without Retry-After: $(cat "$WORK/shed.hdr")"
                fi
        fi
        code=$(curl -s -o "$WORK/readyz-down.json" -w '%{http_code}' --max-time 10 \
                "$API_URL/readyz" || true)
        [[ "$code" == 200 ]] && fleet_fail "/readyz answered 200 with the broker down"
        READYZ_DOWN=$code
        sleep 1
done
[[ -n "$READYZ_DOWN" && "$READYZ_DOWN" != 000 ]] ||
        fleet_fail "/readyz did not answer during the outage (status '$READYZ_DOWN')"
[[ -n "$SHED" ]] ||
        fleet_fail "no submit was shed during the outage (coordinator.max_inflight $MAX_INFLIGHT, $n tried)"
echo "during the outage: submit $SHED was shed: $(cat "$WORK/shed.json")"
echo "during the outage: /readyz $READYZ_DOWN $(cat "$WORK/readyz-down.json")"
for name in coordinator worker-a worker-b; do
        fleet_alive "$name" || fleet_fail "$name exited during the outage"
done

# ---- the broker comes back --------------------------------------------------------------------
echo "restarting the broker after $((SECONDS - DOWN_AT)) s down"
fleet_stack start >"$WORK/stack-restart.err" 2>&1 || fleet_fail "restarting the broker"
grep -q "formatting Kafka storage" "$WORK/stack-restart.err" &&
        fleet_fail "the restart formatted the broker's storage again"
[[ "$(cluster_id)" == "$CLUSTER_ID" ]] || fleet_fail "cluster id changed: $(cluster_id)"
UP_AT=$SECONDS
fleet_wait_for 120 "the coordinator's /readyz to say ready again" fleet_http_ok "$API_URL/readyz"
echo "/readyz ready $((SECONDS - UP_AT)) s after the restart"

# The probe: 202, or 503 with a JSON error and then 202 on a retry under the same key.
wait "$PROBE" || true
PROBE_STATUS=$(cat "$WORK/probe1.json.status")
echo "probe submit during the outage: HTTP $PROBE_STATUS $(head -c 300 "$WORK/probe1.json")"
case "$PROBE_STATUS" in
202) PROBE_OUT=$WORK/probe1.json ;;
503)
        [[ "$(fleet_json_field "$(tr -d '\n' <"$WORK/probe1.json")" code)" != "" ]] ||
                fleet_fail "503 without a JSON error body: $(cat "$WORK/probe1.json")"
        retry_probe() {
                probe_submit "$WORK/probe2.json"
                [[ "$(cat "$WORK/probe2.json.status")" == 202 ]]
        }
        fleet_wait_for 60 "the probe's retry under the same key to be accepted" retry_probe
        PROBE_OUT=$WORK/probe2.json
        ;;
*) fleet_fail "probe submit during the outage: HTTP $PROBE_STATUS $(cat "$WORK/probe1.json"*)" ;;
esac
PROBE_ID=$(fleet_json_field "$(tr -d '\n' <"$PROBE_OUT")" id)
[[ -n "$PROBE_ID" ]] || fleet_fail "no task id in the probe's answer: $(cat "$PROBE_OUT")"

# ---- the run finishes ---------------------------------------------------------------------------
fleet_drive_summary "$DRIVE" "submitted:$TASKS" "succeeded:$TASKS" lost:0 duplicate_results:0 \
        duplicate_side_effects:0 failed:0 dead:0 submit_errors:0

# The drive's submits during the outage were answered 503 (shed, or retried under their keys
# while their first admission waited for Kafka), and retried until accepted: besides the one
# shed above, there must be others.
REFUSED=$(curl -fsS --max-time 10 "$API_URL/metrics" |
        grep '^agentfleet_coordinator_http_requests_total{route="POST /v1/tasks",status="503"}' |
        awk '{n += $NF} END {print n + 0}') || fleet_fail "the coordinator does not answer /metrics"
echo "coordinator: $REFUSED submits answered 503, all retried"
[[ "$REFUSED" -ge 2 ]] ||
        fleet_fail "no drive submit was answered 503 during the outage: the retry path was not tested"

probe_done() {
        local st
        st=$(fleet_json_field "$(curl -fsS --max-time 5 -H "Authorization: Bearer $AGENTFLEET_TOKEN" \
                "$API_URL/v1/tasks/$PROBE_ID" 2>/dev/null | tr -d '\n')" status)
        [[ "$st" == succeeded ]] && return 0
        [[ -z "$st" || "$st" == queued || "$st" == running ]] ||
                fleet_fail "the probe task ended $st"
        return 1
}
fleet_wait_for 60 "the probe task $PROBE_ID to succeed" probe_done

STATS=$(fleet_sim_stats) || fleet_fail "the simagent does not answer /stats"
echo "simagent: $STATS"
[[ "$(fleet_json_field "$STATS" duplicates)" == 0 ]] || fleet_fail "duplicate side effects: $STATS"
[[ "$(fleet_json_field "$STATS" fenced)" == 0 ]] || fleet_fail "fenced calls: $STATS"
for name in coordinator worker-a worker-b; do
        fleet_alive "$name" || fleet_fail "$name died"
        lines=$(wc -l <"$WORK/$name.log")
        echo "$name: $lines log lines"
        [[ "$lines" -le "$FLOOD_MAX" ]] || fleet_fail "$name logged $lines lines (flood?)"
done

echo "PASS: test_fleet_kafka_outage"
