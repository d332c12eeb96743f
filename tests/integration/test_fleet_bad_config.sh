#!/usr/bin/env bash
# test_fleet_bad_config: every program refuses a broken configuration at once, says exactly
# what is wrong, and never prints a secret while doing so. Each case writes a config file with
# one mistake (unknown key, wrong type, out of bounds, malformed YAML, bad catalog reference,
# plaintext token, duplicate secret key, unset ${env:} reference, bad librdkafka value,
# inconsistent lease timings) or sets a bad AGENTFLEET_* variable or --set, and starts the
# programs that read that part of the config: agentfleet-coordinator, agentfleet-worker,
# agentfleet-simagent and agentfleet (the catalog and the worker's settings are read only by
# the daemons that use them).
#
# What it asserts for every program and case: the exit status is 2, "did not start" (and the program
# did exit, within 30 s, without reaching for a service — the addresses point at closed
# ports), stderr carries the precise message (file:line: key: what was expected, or the
# variable's name), and neither stdout nor stderr contains any of the secret values the file
# and the environment hold (Redis password, CLI token, librdkafka SASL password, audit HMAC
# key, service key, LLM API key), even at log level debug.
#
# Needs no Kafka or Redis: it runs whether AF_TEST_KAFKA is set or not.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/fleet.bash"

fleet_setup fleet-badcfg

# Secrets, in the file and in the environment; none may ever be printed.
S_REDIS="redis-pw-$RUN-Zq81"
S_TOKEN="cli-token-$RUN-Kx27"
S_SASL="sasl-pw-$RUN-Wm55"
S_HMAC="audit-hmac-key-$RUN-Pv09-0123456789abcdef"
S_INTAKE="intake-key-$RUN-Ln46"
S_LLM="llm-key-$RUN-Tc33"
S_PLAIN="plaintext-token-$RUN-Hy72"
S_DUP="second-redis-pw-$RUN-Bb11"
SECRETS=("$S_REDIS" "$S_TOKEN" "$S_SASL" "$S_HMAC" "$S_INTAKE" "$S_LLM" "$S_PLAIN" "$S_DUP")

# Nothing listens where the programs are pointed: a program that wrongly accepted its config
# would hang on a connect and hit the 30 s limit instead of passing by luck.
unset AGENTFLEET_CONFIG
export AGENTFLEET_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:$(fleet_free_port)"
export AGENTFLEET_REDIS_PORT="$(fleet_free_port)"
export AGENTFLEET_HTTP_PORT="$(fleet_free_port)"
export AGENTFLEET_SIMAGENT_PORT="$(fleet_free_port)"
export AGENTFLEET_CLI_API_URL="http://127.0.0.1:$(fleet_free_port)"
export AGENTFLEET_AUDIT_HMAC_KEY="$S_HMAC"
export AGENTFLEET_INTAKE_KEY="$S_INTAKE"
export AGENTFLEET_LLM_API_KEY="$S_LLM"
export AGENTFLEET_TOKEN="$S_TOKEN"

# The head of every file: debug logs, and a secret of each kind.
HEAD="log:
  level: debug
redis:
  host: 127.0.0.1
  password: \"$S_REDIS\"
cli:
  token: \"$S_TOKEN\"
kafka:
  sasl.password: \"$S_SASL\"
"

# A small, valid catalog the catalog cases break one piece of.
CATALOG='integrations:
  noop:
    method: POST
    url: http://127.0.0.1:9/noop
    timeout: 5s
service_keys:
  - key_id: intake-svc
    principal: intake
    tenant: t1
    secret_env: AGENTFLEET_INTAKE_KEY
'

ALL=(agentfleet-coordinator agentfleet-worker agentfleet-simagent agentfleet)
DAEMONS_WITH_CATALOG=(agentfleet-coordinator agentfleet-worker)
N_RUNS=0

# write_case NAME BODY: $WORK/NAME.yaml = HEAD + BODY; sets F to its path.
write_case() {
        F="$WORK/$1.yaml"
        printf '%s%s' "$HEAD" "$2" >"$F"
}

# line_of TEXT: the number of the first line of $F containing TEXT.
line_of() {
        grep -nF -- "$1" "$F" | head -n1 | cut -d: -f1
}

# expect_refusal WANT PROGRAM [ENV=VALUE...] [-- ARGS...]: run PROGRAM on $F; it must exit
# 2 within 30 s with WANT on stderr and no secret anywhere in its output.
expect_refusal() {
        local want=$1 prog=$2 envs=() args=() rc out err s
        shift 2
        while [[ $# -gt 0 && "$1" != -- ]]; do envs+=("$1"); shift; done
        [[ $# -gt 0 ]] && shift
        args=("$@")
        # The CLI needs a command; `list` talks to the API only after the config is read.
        [[ "$prog" == agentfleet ]] && args=(list "${args[@]}")
        out="$WORK/out.txt"
        err="$WORK/err.txt"
        set +e
        env "${envs[@]}" timeout 30 "$BIN/$prog" --config "$F" "${args[@]}" >"$out" 2>"$err" \
                </dev/null
        rc=$?
        set -e
        N_RUNS=$((N_RUNS + 1))
        local what="$prog on $(basename "$F") ${envs[*]} ${args[*]}"
        [[ "$rc" != 124 ]] || fleet_fail "$what: still running after 30 s: $(tail -n3 "$err")"
        [[ "$rc" == 2 ]] || fleet_fail "$what: exit $rc, want 2 (a refusal: it did not start)"
        grep -qF -- "$want" "$err" ||
                fleet_fail "$what: stderr lacks \"$want\"; it says: $(head -c 2000 "$err")"
        for s in "${SECRETS[@]}"; do
                if grep -qF -- "$s" "$out" "$err"; then
                        fleet_fail "$what printed the secret $s: $(grep -hF -- "$s" "$out" "$err")"
                fi
        done
}

# ---- settings mistakes: every program reads the settings ------------------------------------
write_case unknown_key 'worker:
  concurency: 8
'
L=$(line_of "concurency")
for p in "${ALL[@]}"; do
        expect_refusal "$F:$L: worker.concurency: unknown setting (did you mean worker.concurrency?)" "$p"
done

write_case wrong_type 'http:
  port: eighty
'
L=$(line_of "eighty")
for p in "${ALL[@]}"; do
        expect_refusal "$F:$L: http.port: expected an integer in [0, 65535], got \"eighty\"" "$p"
done

write_case out_of_bounds 'worker:
  concurrency: 0
'
L=$(line_of "concurrency: 0")
for p in "${ALL[@]}"; do
        expect_refusal "$F:$L: worker.concurrency: expected an integer in [1, 100000], got \"0\"" "$p"
done

write_case bad_duration 'worker:
  lease_ttl: forever
'
L=$(line_of "forever")
for p in "${ALL[@]}"; do
        expect_refusal "$F:$L: worker.lease_ttl: expected a duration" "$p"
done

write_case malformed_yaml 'http:
  address: [127.0.0.1
  port: 8080
'
for p in "${ALL[@]}"; do
        expect_refusal "$F:" "$p"
        expect_refusal "malformed YAML" "$p"
done

# A secret given twice: the message names both lines, never either value.
F="$WORK/duplicate_secret.yaml"
printf 'redis:\n  host: 127.0.0.1\n  password: "%s"\n  password: "%s"\n' "$S_REDIS" "$S_DUP" >"$F"
for p in "${ALL[@]}"; do
        expect_refusal "$F:4: redis.password: duplicate key (first at line 3)" "$p"
done

# ---- environment and command line ------------------------------------------------------------
write_case env_ok ''
for p in "${ALL[@]}"; do
        expect_refusal "AGENTFLEET_REDIS_PORT: redis.port: expected an integer in [1, 65535], got \"70000\"" \
                "$p" AGENTFLEET_REDIS_PORT=70000
        expect_refusal "AGENTFLEET_WORKER_CONCURENCY: not a setting (did you mean AGENTFLEET_WORKER_CONCURRENCY?)" \
                "$p" AGENTFLEET_WORKER_CONCURENCY=8
        expect_refusal "worker.lease_renew: expected a duration" "$p" -- --set worker.lease_renew=2h
        expect_refusal "no.such.setting: unknown setting" "$p" -- --set no.such.setting=1
done

# ---- the catalog: read by the coordinator and the worker ------------------------------------
write_case bad_reference "$CATALOG"'task_types:
  noop:
    agent: no-such-agent
    lane: default
'
L=$(line_of "no-such-agent")
for p in "${DAEMONS_WITH_CATALOG[@]}"; do
        expect_refusal "$F:$L: task_types.noop.agent: unknown agent \"no-such-agent\"" "$p"
done

write_case bad_tool "$CATALOG"'agents:
  a1:
    base_url: http://127.0.0.1:9/v1
    model: m
    system_prompt: You triage.
    tools: [noop, no_such_tool]
task_types:
  noop:
    integration: noop
    lane: default
'
L=$(line_of "no_such_tool")
for p in "${DAEMONS_WITH_CATALOG[@]}"; do
        expect_refusal "$F:$L: agents.a1.tools[1]: unknown integration \"no_such_tool\"" "$p"
done

write_case plaintext_token "$CATALOG"'task_types:
  noop:
    integration: noop
    lane: default
tokens:
  - principal: p1
    tenant: t1
    sha256: "'"$S_PLAIN"'"
'
L=$(line_of "$S_PLAIN")
for p in "${DAEMONS_WITH_CATALOG[@]}"; do
        expect_refusal "$F:$L: tokens[0].sha256: expected sha256:<64 hex digits>" "$p"
done

write_case unset_env_ref 'integrations:
  noop:
    method: POST
    url: http://127.0.0.1:9/noop
    headers:
      Authorization: "Bearer ${env:AF_FLEET_TEST_UNSET_VARIABLE}"
task_types:
  noop:
    integration: noop
    lane: default
'
L=$(line_of "AF_FLEET_TEST_UNSET_VARIABLE")
for p in "${DAEMONS_WITH_CATALOG[@]}"; do
        expect_refusal "$F:$L: integrations.noop.headers.Authorization: environment variable AF_FLEET_TEST_UNSET_VARIABLE is not set" \
                "$p" -u AF_FLEET_TEST_UNSET_VARIABLE
done

# ---- librdkafka's own settings (checked with librdkafka as they load), lease timings --------------------------
# (the head ends inside the kafka: map, so the line continues it)
write_case bad_kafka_value '  linger.ms: lots
'
L=$(line_of "linger.ms: lots")
for p in "${ALL[@]}"; do
        expect_refusal "$F:$L: kafka.linger.ms: Invalid value" "$p"
done

write_case lease_timings 'worker:
  lease_ttl: 2s
  lease_renew: 5s
'
expect_refusal "worker.lease_renew (5000 ms) must be shorter than worker.lease_ttl (2000 ms)" \
        agentfleet-worker

write_case ttl_relation 'worker:
  done_ttl: 1h
coordinator:
  idempotency_ttl: 2h
'
for p in agentfleet-worker agentfleet-coordinator; do
        expect_refusal "worker.done_ttl (3600000 ms) must be at least coordinator.idempotency_ttl (7200000 ms)" "$p"
done

write_case index_ttl_relation 'coordinator:
  idempotency_ttl: 48h
  index_ttl: 1d
worker:
  done_ttl: 48h
'
for p in agentfleet-worker agentfleet-coordinator; do
        expect_refusal "coordinator.index_ttl (86400000 ms) must be at least coordinator.idempotency_ttl (172800000 ms)" "$p"
done

echo "PASS: test_fleet_bad_config ($N_RUNS refusals checked)"
