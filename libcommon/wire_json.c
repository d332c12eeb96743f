/*
 * wire_json: JSON <-> protobuf-c for the wire contract. The parser is outside input's first
 * stop (API bodies, JSON requests on Kafka), so it checks every member's JSON type before
 * touching it and names the field in every error; the encoders serve the API and the CLI.
 */
#include "wire_json.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"
#include "jsonfmt.h"

/* ======================================================================================= */
/* TaskRequest from JSON                                                                    */
/* ======================================================================================= */

typedef enum { F_STR, F_I32, F_I64, F_PAYLOAD } field_kind_t;

/* One member of the JSON form: its name, kind and where it lands in the message. */
typedef struct {
        const char *name;
        field_kind_t kind;
        size_t off;
} req_field_t;

#define RF(name, kind)                                                                             \
        { #name, kind, offsetof(Agentfleet__V1__TaskRequest, name) }
static const req_field_t req_fields[] = {
        RF(type, F_STR),        RF(tenant, F_STR),          RF(principal, F_STR),
        RF(case_key, F_STR),    RF(idempotency_key, F_STR), RF(payload, F_PAYLOAD),
        RF(priority, F_I32),    RF(deadline_ms, F_I64),     RF(max_attempts, F_I32),
        RF(traceparent, F_STR), RF(token, F_STR),           RF(key_id, F_STR),
        RF(signature, F_STR),   RF(request_id, F_STR),
};
#undef RF

static const char *json_kind_name(const json_t *v) {
        switch (json_typeof(v)) {
        case JSON_OBJECT:
                return "an object";
        case JSON_ARRAY:
                return "an array";
        case JSON_STRING:
                return "a string";
        case JSON_INTEGER:
                return "an integer";
        case JSON_REAL:
                return "a number with a fraction";
        case JSON_TRUE:
        case JSON_FALSE:
                return "a boolean";
        case JSON_NULL:
                return "null";
        }
        return "something else";
}

/* Copy a JSON string member; embedded NULs are refused since every consumer is C text. */
static af_err_t take_string(const char *name, const json_t *v, char **out, char *errstr,
                            size_t errstr_size) {
        if (!json_is_string(v))
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "field \"%s\": expected a string, got %s", name,
                                 json_kind_name(v));
        size_t len = json_string_length(v);
        const char *s = json_string_value(v);
        if (memchr(s, '\0', len))
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "field \"%s\": contains a NUL character", name);
        *out = strndup(s, len);
        return *out ? AF_OK : AF_ERR_NOMEM;
}

static af_err_t take_int(const char *name, const json_t *v, int64_t min, int64_t max, int64_t *out,
                         char *errstr, size_t errstr_size) {
        if (!json_is_integer(v))
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "field \"%s\": expected an integer, got %s", name,
                                 json_kind_name(v));
        json_int_t i = json_integer_value(v);
        if (i < min || i > max)
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "field \"%s\": %lld is out of range [%lld, %lld]", name,
                                 (long long) i, (long long) min, (long long) max);
        *out = i;
        return AF_OK;
}

/* payload: an object (dumped compact and key-sorted, see the signing rule in the header) or
 * a string carrying JSON text, kept verbatim. */
static af_err_t take_payload(const json_t *v, char **out, bool *object, char *errstr,
                             size_t errstr_size) {
        *object = false;
        if (json_is_string(v))
                return take_string("payload", v, out, errstr, errstr_size);
        if (!json_is_object(v))
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "field \"payload\": expected an object or a string holding "
                                 "JSON text, got %s",
                                 json_kind_name(v));
        *out = af_json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        *object = *out != NULL;
        return *out ? AF_OK : AF_ERR_NOMEM;
}

af_err_t af_wire_taskrequest_from_json(const char *json, size_t len, unsigned flags,
                                       Agentfleet__V1__TaskRequest **reqp, char *errstr,
                                       size_t errstr_size) {
        return af_wire_taskrequest_from_json_ex(json, len, flags, reqp, NULL, errstr, errstr_size);
}

af_err_t af_wire_taskrequest_from_json_ex(const char *json, size_t len, unsigned flags,
                                          Agentfleet__V1__TaskRequest **reqp, bool *payload_object,
                                          char *errstr, size_t errstr_size) {
        af_err_t err = AF_OK;
        bool object = false;
        json_error_t jerr;
        json_t *root = NULL;
        Agentfleet__V1__TaskRequest *req = NULL;
        const char *key;
        json_t *v;

        *reqp = NULL;
        root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!root) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                                jerr.text);
                goto out;
        }
        if (!json_is_object(root)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "expected a JSON object, got %s", json_kind_name(root));
                goto out;
        }
        req = malloc(sizeof(*req));
        if (!req) {
                err = AF_ERR_NOMEM;
                goto out;
        }
        agentfleet__v1__task_request__init(req);

        json_object_foreach(root, key, v) {
                const req_field_t *f = NULL;
                for (size_t i = 0; i < sizeof(req_fields) / sizeof(req_fields[0]); i++)
                        if (!strcmp(req_fields[i].name, key)) {
                                f = &req_fields[i];
                                break;
                        }
                if (!f) {
                        if (flags & AF_WIRE_F_STRICT) {
                                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                                "unknown field \"%.64s\"", key);
                                goto out;
                        }
                        continue;
                }
                if (json_is_null(v))
                        continue;
                void *dst = (char *) req + f->off;
                int64_t i64 = 0;
                switch (f->kind) {
                case F_STR:
                        err = take_string(f->name, v, (char **) dst, errstr, errstr_size);
                        break;
                case F_PAYLOAD:
                        err = take_payload(v, (char **) dst, &object, errstr, errstr_size);
                        break;
                case F_I32:
                        err = take_int(f->name, v, INT32_MIN, INT32_MAX, &i64, errstr, errstr_size);
                        if (!err)
                                *(int32_t *) dst = (int32_t) i64;
                        break;
                case F_I64:
                        err = take_int(f->name, v, INT64_MIN, INT64_MAX, &i64, errstr, errstr_size);
                        if (!err)
                                *(int64_t *) dst = i64;
                        break;
                }
                if (err)
                        goto out;
        }
        *reqp = req;
        req = NULL;
        if (payload_object)
                *payload_object = object;
out:
        af_wire_taskrequest_free(req);
        json_decref(root);
        return err;
}

void af_wire_taskrequest_free(Agentfleet__V1__TaskRequest *req) {
        /* Strings we set are malloc'ed and the untouched ones are protobuf_c_empty_string,
         * which free_unpacked recognises as the default and skips. */
        if (req)
                agentfleet__v1__task_request__free_unpacked(req, NULL);
}

/* ======================================================================================= */
/* Checks                                                                                   */
/* ======================================================================================= */

bool af_wire_traceparent_valid(const char *s) {
        /* version "00": 00-<32 hex>-<16 hex>-<2 hex>, trace and span ids not all zero */
        static const char shape[] = "xx-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-xxxxxxxxxxxxxxxx-xx";
        if (!s || strlen(s) != sizeof(shape) - 1)
                return false;
        for (size_t i = 0; i < sizeof(shape) - 1; i++) {
                char c = s[i];
                if (shape[i] == '-') {
                        if (c != '-')
                                return false;
                } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
                        return false;
                }
        }
        return !strncmp(s, "00", 2) && strncmp(s + 3, "00000000000000000000000000000000", 32) &&
               strncmp(s + 36, "0000000000000000", 16);
}

/* ---- af_wire_json_surely_valid: jansson 2.14's grammar (load.c), strict where unsure ---- */

#define WJ_MAX_DEPTH 512 /* jansson stops at 2048 (JSON_PARSER_MAX_DEPTH) */

static bool wj_digit(char c) {
        return c >= '0' && c <= '9';
}

static const char *wj_ws(const char *p) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                p++;
        return p;
}

/* The value of 4 hex digits at p, or -1 (stops at the first non-hex, so never past a NUL). */
static long wj_hex4(const char *p) {
        long v = 0;
        for (int i = 0; i < 4; i++) {
                char c = p[i];
                int d = wj_digit(c)              ? c - '0'
                        : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                        : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                 : -1;
                if (d < 0)
                        return -1;
                v = v * 16 + d;
        }
        return v;
}

/* A string's content after its opening quote. @returns what follows the closing quote, or
 * NULL. A \u0000 (jansson refuses NUL in keys and, without JSON_ALLOW_NUL, in values) or any
 * surrogate escape is "not sure", which keeps the pairing rules with jansson. */
static const char *wj_string(const char *p) {
        /* Bytes that stand for themselves in a string: printable ASCII but '"' and '\\'. */
        static const unsigned char plain[256] = {
                [0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1, [0x5d ... 0x7f] = 1};
        for (;;) {
                while (plain[(unsigned char) *p])
                        p++;
                unsigned char c = (unsigned char) *p;
                if (c == '"')
                        return p + 1;
                if (c < 0x20)
                        return NULL; /* control character, or the end of the text */
                if (c == '\\') {
                        c = (unsigned char) p[1];
                        if (c == 'u') {
                                long v = wj_hex4(p + 2);
                                if (v <= 0 || (v >= 0xD800 && v <= 0xDFFF))
                                        return NULL;
                                p += 6;
                        } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' ||
                                   c == 'n' || c == 'r' || c == 't') {
                                p += 2;
                        } else {
                                return NULL;
                        }
                } else {
                        size_t n = af_utf8_seq_len((const unsigned char *) p);
                        if (!n)
                                return NULL;
                        p += n;
                }
        }
}

/* A number. @returns what follows it, or NULL. Integers must fit jansson's int64 (18 digits
 * surely do) and reals must not overflow a double (an integer part and a positive exponent
 * that add up to at most 308 digits, below 1e308, surely do not). */
static const char *wj_number(const char *p) {
        int int_digits = 0, exp = 0, exp_digits = 0;
        bool real = false, exp_neg = false;

        if (*p == '-')
                p++;
        if (*p == '0') {
                p++;
                int_digits = 1;
                if (wj_digit(*p))
                        return NULL; /* leading zero */
        } else if (wj_digit(*p)) {
                while (wj_digit(*p)) {
                        p++;
                        int_digits++;
                }
        } else {
                return NULL;
        }
        if (*p == '.') {
                p++;
                if (!wj_digit(*p))
                        return NULL;
                while (wj_digit(*p))
                        p++;
                real = true;
        }
        if (*p == 'e' || *p == 'E') {
                p++;
                if (*p == '+' || *p == '-')
                        exp_neg = *p++ == '-';
                if (!wj_digit(*p))
                        return NULL;
                while (wj_digit(*p)) {
                        if (++exp_digits > 4)
                                return NULL;
                        exp = exp * 10 + (*p++ - '0');
                }
                real = true;
        }
        if (real ? int_digits + (exp_neg ? 0 : exp) > 308 : int_digits > 18)
                return NULL;
        return p;
}

bool af_wire_json_surely_valid(const char *text) {
        char open[WJ_MAX_DEPTH]; /* '{' or '[' of each container we are in */
        int depth = 0;
        const char *p = text;

        if (!p)
                return false;
        p = wj_ws(p);
        for (;;) {
                /* p is at a value. */
                switch (*p) {
                case '{':
                case '[':
                        if (depth == WJ_MAX_DEPTH)
                                return false;
                        open[depth++] = *p;
                        p = wj_ws(p + 1);
                        if (*p == (open[depth - 1] == '{' ? '}' : ']')) {
                                depth--;
                                p++;
                                break;
                        }
                        if (open[depth - 1] == '{')
                                goto member;
                        continue;
                case '"':
                        p = wj_string(p + 1);
                        break;
                case 't':
                        p = strncmp(p, "true", 4) ? NULL : p + 4;
                        break;
                case 'f':
                        p = strncmp(p, "false", 5) ? NULL : p + 5;
                        break;
                case 'n':
                        p = strncmp(p, "null", 4) ? NULL : p + 4;
                        break;
                default:
                        p = (*p == '-' || wj_digit(*p)) ? wj_number(p) : NULL;
                        break;
                }
                /* After a value: a separator, the end of containers, or the end of text. */
                for (;;) {
                        if (!p)
                                return false;
                        p = wj_ws(p);
                        if (depth == 0)
                                return *p == '\0';
                        if (*p != (open[depth - 1] == '{' ? '}' : ']'))
                                break;
                        depth--;
                        p++;
                }
                if (*p != ',')
                        return false;
                p = wj_ws(p + 1);
                if (open[depth - 1] == '[')
                        continue;
        member:
                /* p is at an object member: "key" : value */
                if (*p != '"' || !(p = wj_string(p + 1)))
                        return false;
                p = wj_ws(p);
                if (*p != ':')
                        return false;
                p = wj_ws(p + 1);
        }
}

static af_err_t check_len(const char *name, const char *s, char *errstr, size_t errstr_size) {
        if (s && strlen(s) > AF_WIRE_KEY_MAX)
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "field \"%s\": longer than %d bytes", name, AF_WIRE_KEY_MAX);
        return AF_OK;
}

/* protobuf-c does not check that a string field is UTF-8, and other languages' decoders
 * refuse a message whose string is not: a request's strings travel on into its Task, result
 * and audit events, so bytes that are not text stop here. */
static af_err_t check_text(const char *name, const char *s, char *errstr, size_t errstr_size) {
        size_t len = s ? strlen(s) : 0, ok = s ? af_utf8_prefix(s, len) : 0;
        if (ok < len)
                return af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                 "field \"%s\": not UTF-8 (byte 0x%02x at offset %zu)", name,
                                 (unsigned char) s[ok], ok);
        return AF_OK;
}

af_err_t af_wire_taskrequest_check(const Agentfleet__V1__TaskRequest *req, size_t max_payload,
                                   int64_t now_ms, char *errstr, size_t errstr_size) {
        return af_wire_taskrequest_check_payload(req, max_payload, false, now_ms, errstr,
                                                 errstr_size);
}

af_err_t af_wire_taskrequest_check_payload(const Agentfleet__V1__TaskRequest *req,
                                           size_t max_payload, bool payload_object, int64_t now_ms,
                                           char *errstr, size_t errstr_size) {
        const char *payload = req->payload && *req->payload ? req->payload : "{}";
        size_t plen = strlen(payload);
        json_error_t jerr;
        json_t *pj = NULL;
        af_err_t err = AF_OK;

        if (plen > max_payload) {
                err = af_errstr(AF_ERR_TOO_LARGE, errstr, errstr_size,
                                "field \"payload\": %zu bytes, over the limit of %zu", plen,
                                max_payload);
                goto out;
        }
        if (payload_object)
                goto fields;
        pj = json_loadb(payload, plen, JSON_REJECT_DUPLICATES, &jerr);
        if (!pj) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "field \"payload\": invalid JSON at line %d column %d: %s",
                                jerr.line, jerr.column, jerr.text);
                goto out;
        }
        if (!json_is_object(pj)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "field \"payload\": expected a JSON object, got %s",
                                json_kind_name(pj));
                goto out;
        }
fields:
        if ((err = check_text("type", req->type, errstr, errstr_size)) ||
            (err = check_text("tenant", req->tenant, errstr, errstr_size)) ||
            (err = check_text("principal", req->principal, errstr, errstr_size)) ||
            (err = check_text("case_key", req->case_key, errstr, errstr_size)) ||
            (err = check_text("idempotency_key", req->idempotency_key, errstr, errstr_size)) ||
            (err = check_text("traceparent", req->traceparent, errstr, errstr_size)) ||
            (err = check_text("token", req->token, errstr, errstr_size)) ||
            (err = check_text("key_id", req->key_id, errstr, errstr_size)) ||
            (err = check_text("signature", req->signature, errstr, errstr_size)) ||
            (err = check_text("request_id", req->request_id, errstr, errstr_size)))
                goto out;
        if (req->priority < 0 || req->priority > 9) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "field \"priority\": %d is out of range [0, 9]", req->priority);
                goto out;
        }
        if (req->deadline_ms < 0 || (req->deadline_ms > 0 && req->deadline_ms <= now_ms)) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "field \"deadline_ms\": %lld is not in the future (unix ms)",
                                (long long) req->deadline_ms);
                goto out;
        }
        if (req->max_attempts < 0 || req->max_attempts > 100) {
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "field \"max_attempts\": %d is out of range [0, 100]",
                                req->max_attempts);
                goto out;
        }
        if ((err = check_len("case_key", req->case_key, errstr, errstr_size)) ||
            (err = check_len("idempotency_key", req->idempotency_key, errstr, errstr_size)) ||
            (err = check_len("request_id", req->request_id, errstr, errstr_size)))
                goto out;
        if (req->traceparent && *req->traceparent && !af_wire_traceparent_valid(req->traceparent))
                err = af_errstr(AF_ERR_INVALID, errstr, errstr_size,
                                "field \"traceparent\": not a W3C traceparent "
                                "(00-<32 hex>-<16 hex>-<2 hex>)");
out:
        json_decref(pj);
        return err;
}

/* ======================================================================================= */
/* Names                                                                                    */
/* ======================================================================================= */

static const char *status_names[] = {
        "unspecified", "queued", "running",  "succeeded",        "failed",
        "retrying",    "dead",   "rejected", "waiting_approval", "cancelled",
};
#define STATUS_CNT (sizeof(status_names) / sizeof(status_names[0]))

const char *af_wire_status2str(Agentfleet__V1__TaskStatus st) {
        return (unsigned) st < STATUS_CNT ? status_names[st] : "unspecified";
}

int af_wire_str2status(const char *s) {
        for (size_t i = 1; i < STATUS_CNT; i++)
                if (!strcmp(status_names[i], s))
                        return (int) i;
        return -1;
}

bool af_wire_status_is_final(Agentfleet__V1__TaskStatus st) {
        switch (st) {
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_SUCCEEDED:
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_FAILED:
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_DEAD:
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_REJECTED:
        case AGENTFLEET__V1__TASK_STATUS__TASK_STATUS_CANCELLED:
                return true;
        default:
                return false;
        }
}

const char *af_wire_origin2str(Agentfleet__V1__Origin o) {
        static const char *names[] = {"unspecified", "api", "kafka", "workflow", "replay"};
        return (unsigned) o < sizeof(names) / sizeof(names[0]) ? names[o] : "unspecified";
}

static const char *actor_kind2str(Agentfleet__V1__ActorKind k) {
        static const char *names[] = {"unspecified", "principal", "component"};
        return (unsigned) k < sizeof(names) / sizeof(names[0]) ? names[k] : "unspecified";
}

/* ======================================================================================= */
/* Messages to JSON                                                                         */
/* ======================================================================================= */

/* Set a string member; proto3 strings are never NULL but tolerate it anyway. */
static void set_str(json_t *o, const char *name, const char *s) {
        json_object_set_new(o, name, json_string(s ? s : ""));
}

/* Embed JSON text as a value when it parses, else as a string; empty text becomes null. */
static void set_json_text(json_t *o, const char *name, const char *text) {
        if (!text || !*text) {
                json_object_set_new(o, name, json_null());
                return;
        }
        json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
        json_object_set_new(o, name, v ? v : json_string(text));
}

json_t *af_wire_versions_to_json(const Agentfleet__V1__Versions *v) {
        json_t *o = json_object();
        if (!o || !v)
                return o;
        set_str(o, "config_hash", v->config_hash);
        set_str(o, "policy", v->policy);
        set_str(o, "agent", v->agent);
        set_str(o, "prompt", v->prompt);
        set_str(o, "workflow", v->workflow);
        return o;
}

static json_t *error_to_json(const Agentfleet__V1__Error *e) {
        if (!e)
                return json_null();
        return json_pack("{s:s, s:s, s:b}", "code", e->code ? e->code : "", "message",
                         e->message ? e->message : "", "retriable", (int) e->retriable);
}

json_t *af_wire_taskrequest_to_json(const Agentfleet__V1__TaskRequest *req) {
        json_t *o = json_object();
        if (!o)
                return NULL;
        set_str(o, "type", req->type);
        set_str(o, "tenant", req->tenant);
        set_str(o, "principal", req->principal);
        set_str(o, "case_key", req->case_key);
        set_str(o, "idempotency_key", req->idempotency_key);
        set_json_text(o, "payload", req->payload);
        json_object_set_new(o, "priority", json_integer(req->priority));
        json_object_set_new(o, "deadline_ms", json_integer(req->deadline_ms));
        json_object_set_new(o, "max_attempts", json_integer(req->max_attempts));
        set_str(o, "traceparent", req->traceparent);
        /* token is a credential: never echoed. key_id and signature are not secret. */
        set_str(o, "key_id", req->key_id);
        set_str(o, "signature", req->signature);
        set_str(o, "request_id", req->request_id);
        return o;
}

json_t *af_wire_task_to_json(const Agentfleet__V1__Task *t) {
        json_t *o = json_object();
        if (!o)
                return NULL;
        set_str(o, "id", t->id);
        set_str(o, "type", t->type);
        set_str(o, "tenant", t->tenant);
        set_str(o, "principal", t->principal);
        set_str(o, "case_key", t->case_key);
        set_str(o, "idempotency_key", t->idempotency_key);
        set_json_text(o, "payload", t->payload);
        json_object_set_new(o, "priority", json_integer(t->priority));
        json_object_set_new(o, "deadline_ms", json_integer(t->deadline_ms));
        json_object_set_new(o, "attempt", json_integer(t->attempt));
        json_object_set_new(o, "max_attempts", json_integer(t->max_attempts));
        json_object_set_new(o, "created_at_ms", json_integer(t->created_at_ms));
        set_str(o, "traceparent", t->traceparent);
        json_object_set_new(o, "versions", af_wire_versions_to_json(t->versions));
        set_str(o, "workflow_run_id", t->workflow_run_id);
        set_str(o, "workflow_step_id", t->workflow_step_id);
        set_str(o, "approval_id", t->approval_id);
        set_str(o, "lane", t->lane);
        set_str(o, "origin", af_wire_origin2str(t->origin));
        set_str(o, "request_id", t->request_id);
        return o;
}

json_t *af_wire_taskresult_to_json(const Agentfleet__V1__TaskResult *r) {
        json_t *o = json_object();
        if (!o)
                return NULL;
        set_str(o, "task_id", r->task_id);
        set_str(o, "status", af_wire_status2str(r->status));
        set_json_text(o, "output", r->output);
        json_object_set_new(o, "error", error_to_json(r->error));
        json_object_set_new(o, "attempt", json_integer(r->attempt));
        set_str(o, "worker_id", r->worker_id);
        if (r->timings)
                json_object_set_new(
                        o, "timings",
                        json_pack("{s:I, s:I, s:I, s:I, s:I}", "created_at_ms",
                                  (json_int_t) r->timings->created_at_ms, "started_at_ms",
                                  (json_int_t) r->timings->started_at_ms, "finished_at_ms",
                                  (json_int_t) r->timings->finished_at_ms, "queue_ms",
                                  (json_int_t) r->timings->queue_ms, "run_ms",
                                  (json_int_t) r->timings->run_ms));
        else
                json_object_set_new(o, "timings", json_null());
        if (r->usage)
                json_object_set_new(o, "usage",
                                    json_pack("{s:I, s:I, s:I, s:i, s:i}", "prompt_tokens",
                                              (json_int_t) r->usage->prompt_tokens,
                                              "completion_tokens",
                                              (json_int_t) r->usage->completion_tokens,
                                              "cost_micros", (json_int_t) r->usage->cost_micros,
                                              "llm_calls", (int) r->usage->llm_calls, "tool_calls",
                                              (int) r->usage->tool_calls));
        else
                json_object_set_new(o, "usage", json_null());
        json_object_set_new(o, "versions", af_wire_versions_to_json(r->versions));
        set_str(o, "type", r->type);
        set_str(o, "tenant", r->tenant);
        set_str(o, "principal", r->principal);
        set_str(o, "case_key", r->case_key);
        json_object_set_new(o, "fence", json_integer(r->fence));
        set_str(o, "idempotency_key", r->idempotency_key);
        set_str(o, "traceparent", r->traceparent);
        return o;
}

json_t *af_wire_audit_to_json(const Agentfleet__V1__AuditEvent *ev) {
        json_t *o = json_object();
        if (!o)
                return NULL;
        set_str(o, "id", ev->id);
        json_object_set_new(o, "at_ms", json_integer(ev->at_ms));
        set_str(o, "actor", ev->actor);
        set_str(o, "actor_kind", actor_kind2str(ev->actor_kind));
        set_str(o, "action", ev->action);
        set_str(o, "task_id", ev->task_id);
        set_str(o, "tenant", ev->tenant);
        set_str(o, "decision", ev->decision);
        set_str(o, "reason", ev->reason);
        set_str(o, "policy_rule", ev->policy_rule);
        json_object_set_new(o, "versions", af_wire_versions_to_json(ev->versions));
        set_json_text(o, "details", ev->details);
        set_str(o, "prev_hash", ev->prev_hash);
        set_str(o, "chain_hash", ev->chain_hash);
        set_str(o, "hmac", ev->hmac);
        set_str(o, "emitter", ev->emitter);
        json_object_set_new(o, "seq", json_integer((json_int_t) ev->seq));
        set_str(o, "traceparent", ev->traceparent);
        return o;
}

json_t *af_wire_deadletter_to_json(const Agentfleet__V1__DeadLetter *dl) {
        json_t *o = json_object();
        if (!o)
                return NULL;
        set_str(o, "id", dl->id);
        json_object_set_new(o, "at_ms", json_integer(dl->at_ms));
        set_str(o, "task_id", dl->task_id);
        set_str(o, "source_topic", dl->source_topic);
        json_object_set_new(o, "source_partition", json_integer(dl->source_partition));
        json_object_set_new(o, "source_offset", json_integer(dl->source_offset));
        set_str(o, "reason", dl->reason);
        json_object_set_new(o, "error", error_to_json(dl->error));
        /* The original bytes may be binary (protobuf): shown as text only when they are a
         * NUL-free UTF-8 string, always given in full as hex. */
        json_t *text = dl->original.len
                               ? json_stringn((const char *) dl->original.data, dl->original.len)
                               : json_string("");
        json_object_set_new(o, "original_text", text ? text : json_null());
        char *hex = malloc(dl->original.len * 2 + 1);
        if (hex) {
                af_hex_encode(dl->original.data, dl->original.len, hex);
                json_object_set_new(o, "original_hex", json_string(hex));
                free(hex);
        }
        set_str(o, "content_type", dl->content_type);
        json_object_set_new(
                o, "original_key",
                dl->original_key.len
                        ? json_stringn((const char *) dl->original_key.data, dl->original_key.len)
                        : json_string(""));
        if (!json_object_get(o, "original_key"))
                json_object_set_new(o, "original_key", json_null());
        set_str(o, "component", dl->component);
        json_object_set_new(o, "attempts", json_integer(dl->attempts));
        return o;
}

/* ======================================================================================= */
/* Signing                                                                                  */
/* ======================================================================================= */

af_err_t af_wire_taskrequest_canonical(const Agentfleet__V1__TaskRequest *req, af_buf_t *out) {
        const char *parts[] = {req->type,      req->tenant,          req->principal,
                               req->case_key,  req->idempotency_key, req->payload,
                               req->request_id};
        af_err_t err = AF_OK;
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]) && !err; i++) {
                if (i)
                        err = af_buf_append(out, "\n", 1);
                if (!err && parts[i])
                        err = af_buf_puts(out, parts[i]);
        }
        return err;
}

af_err_t af_wire_taskrequest_sign(const Agentfleet__V1__TaskRequest *req, const void *key,
                                  size_t key_len, char out[AF_SHA256_HEX_LEN + 1]) {
        af_buf_t b;
        /* Bounded by what the request already holds in memory; the cap only guards math. */
        af_buf_init(&b, SIZE_MAX / 2);
        af_err_t err = af_wire_taskrequest_canonical(req, &b);
        if (!err)
                af_hmac_sha256_hex(key, key_len, af_buf_str(&b), b.len, out);
        af_buf_free(&b);
        return err;
}

bool af_wire_taskrequest_verify(const Agentfleet__V1__TaskRequest *req, const void *key,
                                size_t key_len) {
        char want[AF_SHA256_HEX_LEN + 1];
        char got[AF_SHA256_HEX_LEN + 1];
        if (!req->signature || strlen(req->signature) != AF_SHA256_HEX_LEN)
                return false;
        if (af_wire_taskrequest_sign(req, key, key_len, want))
                return false;
        /* Compare case-insensitively without branching on content: lower the input first. */
        for (size_t i = 0; i < AF_SHA256_HEX_LEN; i++) {
                char c = req->signature[i];
                got[i] = (c >= 'A' && c <= 'F') ? (char) (c - 'A' + 'a') : c;
        }
        got[AF_SHA256_HEX_LEN] = '\0';
        return af_const_eq(want, got, AF_SHA256_HEX_LEN);
}
