/*
 * test_audit: the audit chain seals events so that a verifier with the key accepts an
 * untouched trail and names what is wrong with an edited, removed, reordered or forged one.
 * The audit is created without a producer (seal only), so no broker is needed.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "audit.h"
#include "config.h"

#define KEY      "unit-test-audit-key"
#define N_EVENTS 4

/* Each event as it would travel: packed bytes, decoded again by the "auditor". */
typedef struct {
        Agentfleet__V1__AuditEvent *ev[N_EVENTS];
} trail_t;

static void trail_make(trail_t *t, const char *key) {
        char errstr[256];
        af_config_t *conf = af_config_new();
        assert_non_null(conf);
        assert_int_equal(af_config_set(conf, "audit.hmac_key", key, errstr, sizeof(errstr)), AF_OK);
        af_audit_t *a =
                af_audit_new(NULL /*seal only*/, conf, "worker:unit", errstr, sizeof(errstr));
        assert_non_null(a);
        for (int i = 0; i < N_EVENTS; i++) {
                Agentfleet__V1__AuditEvent ev = AGENTFLEET__V1__AUDIT_EVENT__INIT;
                char details[64];
                snprintf(details, sizeof(details), "{\"i\":%d}", i);
                ev.actor = "worker:unit";
                ev.actor_kind = AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_COMPONENT;
                ev.action = "handler.call";
                ev.task_id = "01HZZZZZZZZZZZZZZZZZZZZZZZ";
                ev.decision = "ok";
                ev.details = details;
                assert_int_equal(af_audit_emit(a, &ev, NULL, NULL), AF_OK);
                assert_int_equal(ev.seq, (uint64_t) i + 1);
                assert_string_equal(ev.emitter, "worker:unit");
                assert_int_equal(strlen(ev.chain_hash), 64);
                size_t len = agentfleet__v1__audit_event__get_packed_size(&ev);
                uint8_t *bytes = malloc(len + 1);
                agentfleet__v1__audit_event__pack(&ev, bytes);
                t->ev[i] = agentfleet__v1__audit_event__unpack(NULL, len, bytes);
                free(bytes);
                assert_non_null(t->ev[i]);
        }
        af_audit_destroy(a);
        af_config_destroy(conf);
}

static void trail_free(trail_t *t) {
        for (int i = 0; i < N_EVENTS; i++)
                agentfleet__v1__audit_event__free_unpacked(t->ev[i], NULL);
}

static af_err_t verify_all(trail_t *t, const char *key, int *bad, char *errstr,
                           size_t errstr_size) {
        const char *prev = "";
        for (int i = 0; i < N_EVENTS; i++) {
                af_err_t err =
                        af_audit_verify(t->ev[i], prev, key, strlen(key), errstr, errstr_size);
                if (err) {
                        *bad = i;
                        return err;
                }
                prev = t->ev[i]->chain_hash;
        }
        return AF_OK;
}

static void test_untouched_trail_verifies(void **state) {
        trail_t t;
        char errstr[256] = "";
        int bad = -1;
        trail_make(&t, KEY);
        assert_string_equal(t.ev[0]->prev_hash, "");
        assert_string_equal(t.ev[1]->prev_hash, t.ev[0]->chain_hash);
        assert_int_equal(verify_all(&t, KEY, &bad, errstr, sizeof(errstr)), AF_OK);
        trail_free(&t);
}

static void test_edited_event_is_detected(void **state) {
        trail_t t;
        char errstr[256] = "";
        int bad = -1;
        trail_make(&t, KEY);
        free(t.ev[2]->decision);
        t.ev[2]->decision = strdup("deny");
        assert_int_equal(verify_all(&t, KEY, &bad, errstr, sizeof(errstr)), AF_ERR_INVALID);
        assert_int_equal(bad, 2);
        assert_non_null(strstr(errstr, "chain_hash does not match"));
        trail_free(&t);
}

static void test_removed_event_is_detected(void **state) {
        trail_t t;
        char errstr[256] = "";
        trail_make(&t, KEY);
        /* Drop event 1: event 2 no longer follows event 0. */
        assert_int_equal(af_audit_verify(t.ev[2], t.ev[0]->chain_hash, KEY, strlen(KEY), errstr,
                                         sizeof(errstr)),
                         AF_ERR_INVALID);
        assert_non_null(strstr(errstr, "prev_hash"));
        trail_free(&t);
}

static void test_reordered_events_are_detected(void **state) {
        trail_t t;
        char errstr[256] = "";
        trail_make(&t, KEY);
        assert_int_equal(af_audit_verify(t.ev[1], "", KEY, strlen(KEY), errstr, sizeof(errstr)),
                         AF_ERR_INVALID);
        trail_free(&t);
}

static void test_wrong_key_fails_hmac(void **state) {
        trail_t t;
        char errstr[256] = "";
        int bad = -1;
        trail_make(&t, KEY);
        assert_int_equal(verify_all(&t, "another-key", &bad, errstr, sizeof(errstr)),
                         AF_ERR_INVALID);
        assert_int_equal(bad, 0);
        assert_non_null(strstr(errstr, "hmac"));
        trail_free(&t);
}

/* A forger who edits an event and recomputes its chain hash without the key is caught by
 * the HMAC. */
static void test_rehashed_forgery_fails_hmac(void **state) {
        trail_t t;
        trail_t other;
        char errstr[256] = "";
        int bad = -1;
        trail_make(&t, KEY);
        trail_make(&other, "forger-key");
        /* The forger's own, self-consistent trail under a different key. */
        assert_int_equal(verify_all(&other, KEY, &bad, errstr, sizeof(errstr)), AF_ERR_INVALID);
        assert_non_null(strstr(errstr, "hmac"));
        trail_free(&t);
        trail_free(&other);
}

static void test_missing_key_is_refused(void **state) {
        char errstr[256] = "";
        af_config_t *conf = af_config_new();
        assert_non_null(conf);
        assert_int_equal(af_config_set(conf, "audit.hmac_key", "", errstr, sizeof(errstr)), AF_OK);
        assert_null(af_audit_new(NULL, conf, "worker:unit", errstr, sizeof(errstr)));
        assert_non_null(strstr(errstr, "audit.hmac_key"));
        af_config_destroy(conf);
        af_audit_destroy(NULL);
}

/* The bytes that travel are packed once, with chain_hash and hmac spliced into the hashed
 * bytes: they must be exactly protobuf-c's packing of the sealed event, whatever fields are
 * empty, and decode to an event that verifies. */
static void test_sealed_bytes_are_the_packed_event(void **state) {
        char errstr[256];
        const char *prev = "";
        char prev_copy[65] = "";
        af_config_t *conf = af_config_new();
        assert_non_null(conf);
        assert_int_equal(af_config_set(conf, "audit.hmac_key", KEY, errstr, sizeof(errstr)), AF_OK);
        af_audit_t *a = af_audit_new(NULL, conf, "worker:unit", errstr, sizeof(errstr));
        assert_non_null(a);
        for (int i = 0; i < 8; i++) {
                Agentfleet__V1__AuditEvent ev = AGENTFLEET__V1__AUDIT_EVENT__INIT;
                Agentfleet__V1__Versions v = AGENTFLEET__V1__VERSIONS__INIT;
                uint8_t *bytes = NULL;
                size_t len = 0;
                ev.action = "lease.acquired";
                if (i & 1) {
                        ev.actor = "worker:unit";
                        ev.task_id = "01HZZZZZZZZZZZZZZZZZZZZZZZ";
                        ev.details = "{\"fence\":1}";
                }
                if (i & 2) {
                        ev.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
                        ev.reason = "a reason";
                }
                if (i & 4) {
                        v.config_hash = "abc";
                        ev.versions = &v;
                        ev.at_ms = 1700000000000LL;
                }
                assert_int_equal(af_audit_seal(a, &ev, &bytes, &len), AF_OK);
                size_t want_len = agentfleet__v1__audit_event__get_packed_size(&ev);
                uint8_t *want = malloc(want_len);
                assert_non_null(want);
                agentfleet__v1__audit_event__pack(&ev, want);
                assert_int_equal(len, want_len);
                assert_memory_equal(bytes, want, len);
                Agentfleet__V1__AuditEvent *back =
                        agentfleet__v1__audit_event__unpack(NULL, len, bytes);
                assert_non_null(back);
                assert_int_equal(
                        af_audit_verify(back, prev, KEY, strlen(KEY), errstr, sizeof(errstr)),
                        AF_OK);
                snprintf(prev_copy, sizeof(prev_copy), "%s", back->chain_hash);
                prev = prev_copy;
                agentfleet__v1__audit_event__free_unpacked(back, NULL);
                free(want);
                free(bytes);
        }
        af_audit_destroy(a);
        af_config_destroy(conf);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_untouched_trail_verifies),
                cmocka_unit_test(test_edited_event_is_detected),
                cmocka_unit_test(test_removed_event_is_detected),
                cmocka_unit_test(test_reordered_events_are_detected),
                cmocka_unit_test(test_wrong_key_fails_hmac),
                cmocka_unit_test(test_rehashed_forgery_fails_hmac),
                cmocka_unit_test(test_missing_key_is_refused),
                cmocka_unit_test(test_sealed_bytes_are_the_packed_event),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
