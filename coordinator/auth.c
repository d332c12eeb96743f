/*
 * auth: who is asking. HTTP requests carry a bearer token; requests produced straight to Kafka
 * carry a token or a service key id with an HMAC signature. Both end as an af_identity_t
 * (principal and tenant come from the credential, never from what the caller claims), and every
 * refusal is an auth.denied audit event that names the reason and the peer, never the secret.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord.h"
#include "log.h"
#include "wire_json.h"

static void identity_from_token(af_identity_t *who, const af_token_t *tok) {
        memset(who, 0, sizeof(*who));
        snprintf(who->principal, sizeof(who->principal), "%s", tok->principal);
        snprintf(who->tenant, sizeof(who->tenant), "%s", tok->tenant ? tok->tenant : "");
        for (size_t i = 0; i < tok->role_cnt; i++)
                if (!strcmp(tok->roles[i], "admin"))
                        who->admin = true;
}

void af_auth_audit_denied(af_coord_t *co, const char *actor, const char *reason,
                          const char *details_json) {
        if (!co->audit)
                return;
        af_err_t err =
                af_audit_record(co->audit, actor, AGENTFLEET__V1__ACTOR_KIND__ACTOR_KIND_PRINCIPAL,
                                "auth.denied", "", "", "deny", reason, details_json);
        if (err)
                af_warn("audit of auth.denied not queued: %s", af_err2str(err));
}

bool af_auth_http(af_http_req_t *req, const char *bearer, void *opaque) {
        af_coord_t *co = opaque;
        const af_token_t *tok = NULL;
        const char *reason;
        af_identity_t *who;

        if (!bearer || !*bearer)
                reason = "missing bearer token";
        else if (!(tok = af_catalog_authenticate(co->cat, bearer)))
                reason = "unknown bearer token";
        else
                reason = NULL;

        if (!tok) {
                json_t *d = json_pack("{s:s, s:s, s:s}", "peer", af_http_req_peer(req) ?: "",
                                      "method", af_http_req_method(req) ?: "", "path",
                                      af_http_req_path(req) ?: "");
                char *details = d ? json_dumps(d, JSON_COMPACT) : NULL;
                af_auth_audit_denied(co, "anonymous", reason, details);
                af_info("auth denied: %s (peer %s)", reason, af_http_req_peer(req) ?: "?");
                const char *lv[] = {"auth", "401", NULL};
                af_metric_add(co->m.http_requests, lv, 1);
                free(details);
                json_decref(d);
                return false;
        }
        who = malloc(sizeof(*who));
        if (!who)
                return false;
        identity_from_token(who, tok);
        af_http_req_set_user(req, who, free);
        return true;
}

/* A claimed tenant/principal must be the credential's: anyone may write to the topic, so a
 * mismatch is a forgery attempt, not a typo to fix up. */
static af_err_t check_claims(const Agentfleet__V1__TaskRequest *req, const af_identity_t *who,
                             char *errstr, size_t errstr_size) {
        if (req->tenant && *req->tenant && strcmp(req->tenant, who->tenant))
                return af_errstr(AF_ERR_FORBIDDEN, errstr, errstr_size,
                                 "tenant \"%.64s\" does not match the credential's tenant "
                                 "\"%s\"",
                                 req->tenant, who->tenant);
        if (req->principal && *req->principal && strcmp(req->principal, who->principal))
                return af_errstr(AF_ERR_FORBIDDEN, errstr, errstr_size,
                                 "principal \"%.64s\" does not match the credential's "
                                 "principal \"%s\"",
                                 req->principal, who->principal);
        return AF_OK;
}

af_err_t af_auth_request(af_coord_t *co, const Agentfleet__V1__TaskRequest *req, af_identity_t *who,
                         char *errstr, size_t errstr_size) {
        bool has_token = req->token && *req->token;
        bool has_key = req->key_id && *req->key_id;

        memset(who, 0, sizeof(*who));
        if (has_token && has_key)
                return af_errstr(AF_ERR_UNAUTHENTICATED, errstr, errstr_size,
                                 "both token and key_id given: use exactly one credential");
        if (has_token) {
                const af_token_t *tok = af_catalog_authenticate(co->cat, req->token);
                if (!tok)
                        return af_errstr(AF_ERR_UNAUTHENTICATED, errstr, errstr_size,
                                         "unknown token");
                identity_from_token(who, tok);
                return check_claims(req, who, errstr, errstr_size);
        }
        if (has_key) {
                const af_service_key_t *sk = af_catalog_service_key(co->cat, req->key_id);
                if (!sk || !sk->secret || !*sk->secret)
                        return af_errstr(AF_ERR_UNAUTHENTICATED, errstr, errstr_size,
                                         "unknown service key \"%.64s\"", req->key_id);
                if (!req->signature || !*req->signature)
                        return af_errstr(AF_ERR_UNAUTHENTICATED, errstr, errstr_size,
                                         "key_id \"%.64s\" given without a signature", req->key_id);
                if (!af_wire_taskrequest_verify(req, sk->secret, strlen(sk->secret)))
                        return af_errstr(AF_ERR_UNAUTHENTICATED, errstr, errstr_size,
                                         "bad signature for key_id \"%.64s\" (HMAC-SHA256 "
                                         "over the canonical request)",
                                         req->key_id);
                snprintf(who->principal, sizeof(who->principal), "%s", sk->principal);
                snprintf(who->tenant, sizeof(who->tenant), "%s", sk->tenant ? sk->tenant : "");
                who->service_key = true;
                return check_claims(req, who, errstr, errstr_size);
        }
        return af_errstr(AF_ERR_UNAUTHENTICATED, errstr, errstr_size,
                         "no credential: give a token or key_id with signature");
}
