#!/usr/bin/env bash
# test_fleet_kill9: a worker killed with SIGKILL in the middle of a run loses nothing and
# applies no side effect twice. The real coordinator, two workers and the simulated agent
# (300 ms per call, so every claim spends about a second in a worker) run on the real Kafka
# broker and Redis; `agentfleet drive` submits 200 claim.triage tasks at 20 per second, half
# over the API and half as signed requests straight to Kafka. Once results are coming in,
# worker A is frozen; when it holds leases (checked in Redis) it gets SIGKILL, and a
# replacement worker C starts.
# A's leases expire (worker.lease_ttl 3s), the group gives its partitions to B and C
# (session timeout 6 s), and the uncommitted messages are redelivered: finished ones re-emit
# their stored result, interrupted ones run again under a higher fencing number.
#
# What it asserts:
#   - drive: submitted 200, succeeded 200, lost 0, duplicate_results 0 (every task ends with
#     exactly one final result), duplicate_side_effects 0, exit 0;
#   - simagent /stats: duplicates 0 (no claim updated twice under different keys), fenced 0
#     (a re-run sends the same Idempotency-Key, so the simagent replays rather than having to
#     fence), applied >= 200 (every claim's CRM update happened), max_fence >= 2 (a task A
#     held was really taken over: its re-run reached the CRM under a second lease);
#   - A was really killed mid-run (it held leases at that moment), and B and C survive.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/fleet.bash"

fleet_init fleet-kill9
TASKS=200
LEASE=(--set worker.lease_ttl=3s --set worker.lease_renew=1s)

fleet_start_simagent --set simagent.latency_ms=300 --set simagent.latency_jitter_ms=100
fleet_start_coordinator
fleet_start_worker worker-a "${LEASE[@]}"
fleet_start_worker worker-b "${LEASE[@]}"
fleet_wait_for 90 "both workers to get partitions" \
        eval 'fleet_worker_joined worker-a && fleet_worker_joined worker-b'
curl -fsS -X POST "$SIM_URL/stats/reset" >/dev/null || fleet_fail "resetting the simagent's stats"

"$BIN/agentfleet" drive --tasks "$TASKS" --type claim.triage --payloads "$CLAIMS" \
        --api-share 0.5 --key-id intake-svc --rate 20 --timeout 300s --linger 3s \
        --simagent "$SIM_URL" --json >"$WORK/drive.out" 2>"$WORK/drive.err" &
DRIVE=$!

# Kill A while it works: once some results are in (the CRM saw 30 updates), freeze A with
# SIGSTOP and count its leases in Redis. A frozen A can neither finish nor start a task, so
# after a moment for commands it had already sent, the count is exact: with at least one
# lease left, A dies mid-task (SIGKILL); otherwise it resumes and we look again.
A_PID=${FLEET_PIDS[worker-a]}
A_LEASES=0
freeze_a_mid_run() {
        local applied
        applied=$(fleet_sim_stat applied)
        [[ "${applied:-0}" -ge 30 ]] || return 1
        kill -STOP "$A_PID"
        sleep 0.5 # commands A sent before it froze reach Redis
        A_LEASES=$(fleet_leases_of "worker-a-$RUN")
        [[ "$A_LEASES" -ge 1 ]] && return 0
        kill -CONT "$A_PID"
        return 1
}
fleet_wait_for 120 "worker A to hold leases after 30 side effects" freeze_a_mid_run
kill -KILL "$A_PID"
{ wait "$A_PID"; } 2>/dev/null || true
fleet_stopped worker-a
echo "killed worker A with $A_LEASES leases held, $(fleet_sim_stat applied) side effects applied"
fleet_start_worker worker-c "${LEASE[@]}"

fleet_drive_summary "$DRIVE" "submitted:$TASKS" "succeeded:$TASKS" lost:0 duplicate_results:0 \
        duplicate_side_effects:0 failed:0 dead:0

STATS=$(fleet_sim_stats) || fleet_fail "the simagent does not answer /stats"
echo "simagent: $STATS"
[[ "$(fleet_json_field "$STATS" duplicates)" == 0 ]] || fleet_fail "duplicate side effects: $STATS"
[[ "$(fleet_json_field "$STATS" fenced)" == 0 ]] || fleet_fail "fenced calls: $STATS"
[[ "$(fleet_json_field "$STATS" applied)" -ge "$TASKS" ]] ||
        fleet_fail "fewer CRM updates applied than claims: $STATS"
[[ "$(fleet_json_field "$STATS" max_fence)" -ge 2 ]] ||
        fleet_fail "no task was taken over under a second lease (max_fence < 2): $STATS"
fleet_alive worker-b || fleet_fail "worker B died"
fleet_alive worker-c || fleet_fail "worker C died"

echo "PASS: test_fleet_kill9"
