#!/usr/bin/env bash
# test_fleet_sigterm: SIGTERM drains a worker cleanly, both ways a drain can end. The real
# coordinator, workers and simulated agent (500 ms per call: a claim spends well over a second
# in a worker) run on the real Kafka broker and Redis while `agentfleet drive` submits 200
# claim.triage tasks at 10 per second.
#
#   1. Worker A (worker.drain_timeout 250ms) gets SIGTERM while it holds leases (a claim
#      takes about 1.5 s, so some of them are still running at the deadline): it stops
#      fetching, its deadline passes with tasks still running, it hands them back (handlers
#      stopped, leases released, no result, offsets not stored), flushes, commits, leaves the
#      group and exits 0. Worker B takes the handed-back tasks over and completes them.
#   2. A replacement worker C joins; worker B (worker.drain_timeout 60s) gets SIGTERM while it
#      holds leases: it stops fetching, lets every in-flight task finish (no hand-back) and
#      exits 0. C completes the rest.
#
# What it asserts: both workers exit 0, A within its deadline plus the release/flush grace
# and B before its deadline; each log shows the drain steps ("draining: fetching stopped"
# with tasks in flight, A's "drain deadline: handing back", "drained:"; none of B's tasks
# handed back); drive reports submitted = succeeded = 200, lost 0, duplicate_results 0,
# duplicate_side_effects 0; the simagent counts no duplicate side effect.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/fleet.bash"

fleet_init fleet-sigterm
TASKS=200
LEASE=(--set worker.lease_ttl=5s --set worker.lease_renew=1s)

fleet_start_simagent --set simagent.latency_ms=500 --set simagent.latency_jitter_ms=100
fleet_start_coordinator
fleet_start_worker worker-a "${LEASE[@]}" --set worker.drain_timeout=250ms
fleet_start_worker worker-b "${LEASE[@]}" --set worker.drain_timeout=60s
fleet_wait_for 90 "both workers to get partitions" \
        eval 'fleet_worker_joined worker-a && fleet_worker_joined worker-b'
curl -fsS -X POST "$SIM_URL/stats/reset" >/dev/null || fleet_fail "resetting the simagent's stats"

"$BIN/agentfleet" drive --tasks "$TASKS" --type claim.triage --payloads "$CLAIMS" \
        --api-share 0.5 --key-id intake-svc --rate 10 --timeout 300s --linger 3s \
        --simagent "$SIM_URL" --json >"$WORK/drive.out" 2>"$WORK/drive.err" &
DRIVE=$!

# holds_leases NAME MIN_APPLIED MIN_LEASES: results are coming in and NAME holds leases.
holds_leases() {
        local applied
        applied=$(fleet_sim_stat applied)
        [[ "${applied:-0}" -ge "$2" ]] || return 1
        [[ $(fleet_leases_of "$1-$RUN") -ge "$3" ]]
}

# sigterm_and_wait NAME MAX_S: SIGTERM, then the exit status, failing after MAX_S seconds.
sigterm_and_wait() {
        local name=$1 max=$2 pid=${FLEET_PIDS[$1]} i rc
        kill -TERM "$pid"
        for ((i = 0; i < max * 5; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && fleet_fail "$name still runs ${max}s after SIGTERM"
        set +e
        wait "$pid"
        rc=$?
        set -e
        fleet_stopped "$name"
        [[ "$rc" == 0 ]] || fleet_fail "$name exited $rc after SIGTERM, want 0"
}

# in_log NAME TEXT: the worker's log has a line containing TEXT.
in_log() {
        grep -qF -- "$2" "$WORK/$1.log"
}

# The "draining:" line names the tasks in flight when fetching stopped.
drain_in_flight() {
        grep -o 'draining: fetching stopped, [0-9]* tasks in flight' "$WORK/$1.log" |
                head -n1 | grep -o '[0-9][0-9]*' | head -n1
}

# ---- 1. A: the deadline passes, in-flight tasks are handed back ------------------------------
fleet_wait_for 120 "worker A to hold leases mid-run" holds_leases worker-a 20 4
sigterm_and_wait worker-a 30
in_log worker-a "draining: fetching stopped" || fleet_fail "A's log has no drain start"
[[ "$(drain_in_flight worker-a)" -ge 1 ]] || fleet_fail "A had no task in flight at SIGTERM"
in_log worker-a "drain deadline: handing back" || fleet_fail "A handed nothing back"
in_log worker-a "drained: " || fleet_fail "A's log has no drained line"
in_log worker-a "worker stopped" || fleet_fail "A's log does not end with worker stopped"
echo "A: $(grep -o 'drain deadline: handing back [0-9]* tasks' "$WORK/worker-a.log")"

# ---- 2. B: in-flight tasks finish before the deadline ----------------------------------------
fleet_start_worker worker-c "${LEASE[@]}" --set worker.drain_timeout=60s
fleet_wait_for 90 "worker C to get partitions" fleet_worker_joined worker-c
fleet_wait_for 120 "worker B to hold leases mid-run" holds_leases worker-b 0 3
sigterm_and_wait worker-b 60
in_log worker-b "draining: fetching stopped" || fleet_fail "B's log has no drain start"
[[ "$(drain_in_flight worker-b)" -ge 1 ]] || fleet_fail "B had no task in flight at SIGTERM"
in_log worker-b "handing back" && fleet_fail "B handed tasks back before its 60 s deadline"
in_log worker-b "still in flight" && fleet_fail "B stopped with tasks in flight"
in_log worker-b "drained: " || fleet_fail "B's log has no drained line"
in_log worker-b "worker stopped" || fleet_fail "B's log does not end with worker stopped"
echo "B: $(grep -o 'draining: fetching stopped, [0-9]* tasks in flight' "$WORK/worker-b.log"), $(grep -o 'drained: [0-9]* succeeded' "$WORK/worker-b.log")"

fleet_drive_summary "$DRIVE" "submitted:$TASKS" "succeeded:$TASKS" lost:0 duplicate_results:0 \
        duplicate_side_effects:0 failed:0 dead:0 cancelled:0
STATS=$(fleet_sim_stats) || fleet_fail "the simagent does not answer /stats"
echo "simagent: $STATS"
[[ "$(fleet_json_field "$STATS" duplicates)" == 0 ]] || fleet_fail "duplicate side effects: $STATS"
fleet_alive worker-c || fleet_fail "worker C died"

echo "PASS: test_fleet_sigterm"
