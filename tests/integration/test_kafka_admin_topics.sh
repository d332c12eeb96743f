#!/usr/bin/env bash
# test_kafka_admin_topics: af-kafka-admin creates the topics of one prefix and deletes exactly
# those again, on the real broker. What it asserts: create-topics makes all 11 contract topics
# of the prefix; delete-topics removes all of them (metadata no longer lists any) while a
# second prefix's topics stay; a repeat delete is fine (0 deleted, 11 not there); and
# delete-topics without an explicit --prefix refuses (exit 2) instead of deleting the default,
# production prefix. wait-group returns once a real consumer group (an af-relay) is stable
# holding the prefix's task partitions, and fails with the group's state when there is none.
set -euo pipefail
if [[ -z "${AF_TEST_KAFKA:-}" ]]; then
        echo "SKIP: AF_TEST_KAFKA is not set"
        exit 0
fi
ADMIN="$AF_BINARY_DIR/af-kafka-admin"
RUN="$(date +%s)-$$"
GONE="tadmin-gone-$RUN." KEPT="tadmin-kept-$RUN."
fail() { echo "FAIL: $*" >&2; exit 1; }
count() { "$ADMIN" list-topics --bootstrap "$AF_TEST_KAFKA" | grep -c "^$1" || true; }

"$ADMIN" create-topics --bootstrap "$AF_TEST_KAFKA" --prefix "$GONE" --partitions 1 >/dev/null
"$ADMIN" create-topics --bootstrap "$AF_TEST_KAFKA" --prefix "$KEPT" --partitions 1 >/dev/null
[[ "$(count "$GONE")" == 11 ]] || fail "create-topics made $(count "$GONE") topics, expected 11"

out=$("$ADMIN" delete-topics --bootstrap "$AF_TEST_KAFKA" --prefix "$GONE")
[[ "$out" == *"11 deleted, 0 were not there"* ]] || fail "delete-topics said: $out"
# KRaft publishes the deletion to the metadata shortly after it answers.
for _ in $(seq 1 50); do [[ "$(count "$GONE")" == 0 ]] && break; sleep 0.2; done
[[ "$(count "$GONE")" == 0 ]] || fail "$(count "$GONE") topics of $GONE are still listed"
[[ "$(count "$KEPT")" == 11 ]] || fail "the other prefix lost topics: $(count "$KEPT") left"

out=$("$ADMIN" delete-topics --bootstrap "$AF_TEST_KAFKA" --prefix "$GONE")
[[ "$out" == *"0 deleted, 11 were not there"* ]] || fail "repeat delete-topics said: $out"

rc=0
err=$("$ADMIN" delete-topics --bootstrap "$AF_TEST_KAFKA" 2>&1) || rc=$?
[[ "$rc" == 2 && "$err" == *"explicit --prefix"* ]] || fail "no --prefix: rc=$rc, said: $err"

# wait-group, on the kept prefix's 1-partition tasks.default, consumed by one af-relay.
GROUP="tadmin-group-$RUN"
"$AF_BINARY_DIR/af-relay" --bootstrap "$AF_TEST_KAFKA" --prefix "$KEPT" --lane default \
        --group "$GROUP" --seconds 60 2>/dev/null &
relay=$!
trap 'kill $relay 2>/dev/null || true' EXIT
"$ADMIN" wait-group --bootstrap "$AF_TEST_KAFKA" --group "$GROUP" --partitions 1 \
        --timeout-ms 30000 || fail "wait-group: the relay's group did not form"
rc=0
err=$("$ADMIN" wait-group --bootstrap "$AF_TEST_KAFKA" --group "$GROUP-none" --partitions 1 \
        --timeout-ms 1000 2>&1) || rc=$?
[[ "$rc" == 1 && "$err" == *"0 of 1 partitions assigned"* ]] ||
        fail "wait-group without a group: rc=$rc, said: $err"
kill "$relay" 2>/dev/null || true

"$ADMIN" delete-topics --bootstrap "$AF_TEST_KAFKA" --prefix "$KEPT" >/dev/null
echo "PASS: create-topics and delete-topics touch exactly one prefix's topics; wait-group waits"
