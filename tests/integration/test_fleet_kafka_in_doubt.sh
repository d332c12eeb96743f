#!/usr/bin/env bash
# test_fleet_kafka_in_doubt: an admission whose write Kafka never confirmed is "in doubt", and
# the coordinator treats it so end to end: it keeps the idempotency key, tells the client to
# retry with it, and the retry takes the task over under the same id -- one task, run once.
#
# The broker STALLS instead of dying (SIGSTOP): its socket still accepts, so the coordinator's
# produce request is sent and sits unanswered until librdkafka's message timeout
# (kafka.message.timeout.ms, 3 s here) reports the record "possibly persisted" (a warm-up task
# first makes sure the producer has a connection to send it on: with none, the record would
# surely not be persisted, a plain failure). An API submit with an Idempotency-Key is made
# during the stall: its QUEUED record (the first write of an admission, coordinator/README.md
# step 5) is the one in doubt. Then the broker resumes
# (SIGCONT) and writes what it was sent: the record in doubt really lands. The client retries
# under the same key every second; within coordinator.takeover_grace (8 s here) of the first
# admission it is told the task is still being admitted, after it the coordinator takes the
# task over (step 4b) and publishes it again under the same id. The stack is private
# (fleet_init_private): the shared test broker must never be stopped.
#
# What it asserts:
#   - the submit during the stall is answered 503 within SUBMIT_BOUND_S (not 202, no hang),
#     with a JSON error {code: unavailable, message} saying the task may be published and to
#     retry with the same idempotency key;
#   - the idempotency key survived that answer and names a task, not yet published;
#   - the QUEUED record sent into the stall landed once the broker resumed (the coordinator's
#     GET /v1/tasks/{id} shows the task queued: the index learns of it only from `results`);
#   - the retries under the same key end in 202 with Idempotent-Replayed: true, every answer
#     naming a task names that same task id, and every other answer is a 503 JSON error;
#     none is accepted before the takeover grace has passed since the first submit;
#   - exactly one task for the key: GET /v1/tasks for the tenant lists the warm-up task and
#     this one, nothing else; the task ends succeeded, with no error (no publish_failed);
#   - the simagent applied one CRM update (the task's side effect), no duplicate, no fenced call;
#   - the takeover happened: agentfleet_coordinator_republished_total{reason="queued_only"}
#     is 1, and the coordinator logged the admission in doubt and no "task not published to";
#   - the coordinator and the worker are alive at the end; no sanitizer report (fleet.bash).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/fleet.bash"

fleet_init_private fleet-kafka-in-doubt
MSG_TIMEOUT_MS=3000
GRACE_S=8
SUBMIT_BOUND_S=20 # the submit into the stall is answered well before this (~3 s)
RETRY_FOR_S=60    # the retries reach 202 within this (the grace is 8 s)

# A stopped broker ignores SIGTERM: resume it before anything is stopped, also on failure.
KAFKA_PID=""
kafka_resume() {
        [[ -z "$KAFKA_PID" ]] || kill -CONT "$KAFKA_PID" 2>/dev/null || true
}
trap 'kafka_resume; fleet_cleanup' EXIT

fleet_start_simagent
fleet_start_coordinator --set kafka.message.timeout.ms=$MSG_TIMEOUT_MS \
        --set coordinator.takeover_grace=${GRACE_S}s
fleet_start_worker worker-a
fleet_wait_for 90 "the worker to get partitions" fleet_worker_joined worker-a

# post FILE KEY BODY MAX_S: POST /v1/tasks; the answer's body in FILE, its headers in FILE.h;
# prints the HTTP status (000: no answer within MAX_S).
post() {
        curl -sS -D "$1.h" -o "$1" -w '%{http_code}' --max-time "$4" -X POST "$API_URL/v1/tasks" \
                -H "Authorization: Bearer $AGENTFLEET_TOKEN" -H "Content-Type: application/json" \
                -H "Idempotency-Key: $2" -d "$3" 2>"$1.err" || true
}
get_task() { # $1: task id; prints the index entry (one line), empty when not found
        curl -fsS --max-time 5 -H "Authorization: Bearer $AGENTFLEET_TOKEN" \
                "$API_URL/v1/tasks/$1" 2>/dev/null | tr -d '\n' || true
}
task_status() {
        fleet_json_field "$(get_task "$1")" status
}
# task_ended ID: the task succeeded; fails the test if it ended otherwise.
task_ended() {
        local st
        st=$(task_status "$1")
        [[ "$st" == succeeded ]] && return 0
        [[ -z "$st" || "$st" == queued || "$st" == running ]] ||
                fleet_fail "task $1 ended $st: $(get_task "$1")"
        return 1
}
now_ms() {
        date +%s%3N
}
since() { # $1: an earlier now_ms; prints the milliseconds since
        echo $(($(now_ms) - $1))
}
crm_body() { # $1: claim id
        echo '{"type":"crm.update","payload":{"claim_id":"'"$1"'","status":"triaged"}}'
}

# ---- warm-up: the coordinator's producer is connected and knows the topics -----------------
# (a produce request can only be sent into the stall over a connection that exists).
WARM_KEY="warm-$RUN"
code=$(post "$WORK/warm.json" "$WARM_KEY" "$(crm_body "CLM-WARM-$RUN")" 30)
[[ "$code" == 202 ]] || fleet_fail "warm-up submit: HTTP $code $(cat "$WORK/warm.json")"
WARM=$(tr -d '\n' <"$WORK/warm.json")
WARM_ID=$(fleet_json_field "$WARM" id)
TENANT=$(fleet_json_field "$WARM" tenant)
[[ -n "$WARM_ID" && -n "$TENANT" ]] || fleet_fail "warm-up answer without id or tenant: $WARM"
fleet_wait_for 60 "the warm-up task $WARM_ID to succeed" task_ended "$WARM_ID"
curl -fsS -X POST "$SIM_URL/stats/reset" >/dev/null || fleet_fail "resetting the simagent's stats"

# ---- the stall -------------------------------------------------------------------------------
KEY="in-doubt-$RUN"
BODY=$(crm_body "CLM-INDOUBT-$RUN")
pid=$(tr -dc 0-9 <"$STACK_DIR/kafka/kafka.pid")
[[ -n "$pid" ]] && kill -0 "$pid" || fleet_fail "no live broker pid in $STACK_DIR"
kill -STOP "$pid"
KAFKA_PID=$pid
STOP_AT=$(now_ms)
echo "stopped the broker (pid $KAFKA_PID)"

code=$(post "$WORK/submit.json" "$KEY" "$BODY" "$SUBMIT_BOUND_S")
ANSWER=$(tr -d '\n' <"$WORK/submit.json")
echo "submit into the stall: HTTP $code after $(since "$STOP_AT") ms: $ANSWER"
# The broker is resumed first whatever the answer, so that a failure below leaves a stack
# that stops cleanly. It was stopped longer than the message timeout: the answer came after it.
kafka_resume
KAFKA_PID=""
echo "resumed the broker after $(since "$STOP_AT") ms stopped"
[[ "$code" != 000 ]] || fleet_fail "the submit into the stall got no answer within ${SUBMIT_BOUND_S}s"
[[ "$code" == 503 ]] || fleet_fail "the submit into the stall: HTTP $code, want 503: $ANSWER"
[[ "$(fleet_json_field "$ANSWER" code)" == unavailable ]] ||
        fleet_fail "the 503 is not a JSON error with code unavailable: $ANSWER"
MSG=$(fleet_json_field "$ANSWER" message)
[[ "$MSG" == *"may be published"* && "$MSG" == *"retry with the same idempotency key"* ]] ||
        fleet_fail "the 503 does not say the task may be published / retry with the same key: $MSG"

# The key was kept (not deleted as after a write that surely failed), naming the task in
# doubt, not marked published.
IDEM=$(fleet_redis GET "af:idem:{$TENANT}:$KEY")
[[ "$IDEM" =~ ^[0-9A-HJKMNP-TV-Z]{26}$ ]] ||
        fleet_fail "idempotency key after the answer in doubt: '$IDEM', want the task's id"
TASK_ID=$IDEM
echo "the key names task $TASK_ID"

# The QUEUED record sent into the stall lands once the broker resumes: the index (built from
# `results`; the coordinator did not index the record itself, as it was not confirmed) shows
# the task queued.
landed() {
        [[ "$(task_status "$TASK_ID")" == queued ]]
}
fleet_wait_for 60 "the QUEUED record of $TASK_ID to land in results" landed
echo "the record in doubt landed $(since "$STOP_AT") ms after the stall began"

# ---- the retries under the same key --------------------------------------------------------
N503=0
N_ADMITTING=0
ACCEPTED=""
for ((i = 0; i < RETRY_FOR_S; i++)); do
        code=$(post "$WORK/retry.json" "$KEY" "$BODY" 30)
        ANSWER=$(tr -d '\n' <"$WORK/retry.json")
        case "$code" in
        503)
                N503=$((N503 + 1))
                [[ -n "$(fleet_json_field "$ANSWER" code)" ]] ||
                        fleet_fail "retry: 503 without a JSON error: $ANSWER"
                named=$(printf '%s' "$ANSWER" | grep -oE 'task [0-9A-HJKMNP-TV-Z]{26}' |
                        cut -d' ' -f2 | sort -u)
                [[ -z "$named" || "$named" == "$TASK_ID" ]] ||
                        fleet_fail "retry: a 503 names task $named, not $TASK_ID: $ANSWER"
                [[ "$ANSWER" != *"still being admitted"* ]] || N_ADMITTING=$((N_ADMITTING + 1))
                ;;
        202)
                grep -qi '^Idempotent-Replayed: *true' "$WORK/retry.json.h" ||
                        fleet_fail "retry: 202 without Idempotent-Replayed (a new task?): $ANSWER"
                got=$(fleet_json_field "$ANSWER" id)
                [[ "$got" == "$TASK_ID" ]] ||
                        fleet_fail "retry: 202 names task $got, not $TASK_ID: $ANSWER"
                ACCEPTED=$(since "$STOP_AT")
                break
                ;;
        *) fleet_fail "retry: HTTP $code: $ANSWER" ;;
        esac
        sleep 1
done
[[ -n "$ACCEPTED" ]] || fleet_fail "no retry was accepted within ${RETRY_FOR_S}s: $ANSWER"
echo "retries: $N503 answered 503 ($N_ADMITTING \"still being admitted\"), then 202 (replayed," \
        "$TASK_ID) $ACCEPTED ms after the stall began"
# Taken over only once the grace passed: the key was reserved after the stall began.
((ACCEPTED >= GRACE_S * 1000)) ||
        fleet_fail "a retry was accepted ${ACCEPTED} ms after the first submit, within the grace"

# One more repeat now answers at once with the same task.
code=$(post "$WORK/again.json" "$KEY" "$BODY" 30)
got=$(fleet_json_field "$(tr -d '\n' <"$WORK/again.json")" id)
[[ "$code" == 202 && "$got" == "$TASK_ID" ]] ||
        fleet_fail "a repeat after the takeover: HTTP $code, task '$got': $(cat "$WORK/again.json")"

# ---- one task, run once ---------------------------------------------------------------------
fleet_wait_for 60 "task $TASK_ID to succeed" task_ended "$TASK_ID"
ENTRY=$(get_task "$TASK_ID")
err=$(fleet_json_field "$ENTRY" error)
[[ "$ENTRY" != *publish_failed* && ( -z "$err" || "$err" == null ) ]] ||
        fleet_fail "task $TASK_ID carries an error: $ENTRY"

LIST=$(curl -fsS --max-time 10 -H "Authorization: Bearer $AGENTFLEET_TOKEN" \
        "$API_URL/v1/tasks?tenant=$TENANT&limit=500" | tr -d '\n') ||
        fleet_fail "GET /v1/tasks does not answer"
IDS=$(printf '%s' "$LIST" | grep -oE '"(task_)?id": *"[0-9A-HJKMNP-TV-Z]{26}"' |
        grep -oE '[0-9A-HJKMNP-TV-Z]{26}' | sort -u | tr '\n' ' ')
WANT=$(printf '%s\n' "$WARM_ID" "$TASK_ID" | sort -u | tr '\n' ' ')
echo "tasks of $TENANT: $IDS"
[[ "$IDS" == "$WANT" ]] || fleet_fail "tasks listed: $IDS, want the warm-up's and $TASK_ID: $LIST"

STATS=$(fleet_sim_stats) || fleet_fail "the simagent does not answer /stats"
echo "simagent: $STATS"
[[ "$(fleet_json_field "$STATS" applied)" == 1 ]] ||
        fleet_fail "side effects applied: want 1 (one CRM update): $STATS"
[[ "$(fleet_json_field "$STATS" duplicates)" == 0 ]] || fleet_fail "duplicate side effects: $STATS"
[[ "$(fleet_json_field "$STATS" fenced)" == 0 ]] || fleet_fail "fenced calls: $STATS"

REPUB=$(curl -fsS --max-time 10 "$API_URL/metrics" |
        grep '^agentfleet_coordinator_republished_total' || true)
echo "coordinator: ${REPUB:-no republished_total series}"
[[ "$(printf '%s\n' "$REPUB" | grep 'reason="queued_only"' | awk '{print $NF}')" == 1 ]] ||
        fleet_fail "want one takeover of a task whose QUEUED record landed: ${REPUB:-none}"
grep -q "it may be published" "$WORK/coordinator.log" ||
        fleet_fail "the coordinator did not log the admission in doubt"
# (admit.c's words when a Task surely failed and a FAILED publish_failed record closes it)
! grep -q "task not published to" "$WORK/coordinator.log" ||
        fleet_fail "the coordinator logged a task not published (publish_failed)"
for name in coordinator worker-a; do
        fleet_alive "$name" || fleet_fail "$name died"
done

echo "PASS: test_fleet_kafka_in_doubt"
