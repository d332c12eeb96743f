/*
 * http_client: libcurl's multi interface driven by the process's libevent loop.
 *
 * The worker runs integrations and LLM calls through this: hundreds of requests in flight on
 * the loop thread, each with its own timeout and response cap, over reused keep-alive
 * connections. The wiring follows TRAPS.md for curl 7.88:
 *   - CURLMOPT_TIMERFUNCTION keeps ONE libevent timer, replaced on every call; -1 deletes it
 *     and 0 becomes a zero-delay event, so libcurl is never re-entered from its own callback;
 *   - CURLMOPT_SOCKETFUNCTION only (re)arms or disarms a per-fd event; on CURL_POLL_REMOVE the
 *     event is deleted at once because the fd number may be reused by the next connect. The
 *     events live in a table by fd number and serve whichever socket has that number next,
 *     so (re)watching a socket allocates nothing;
 *   - after every curl_multi_socket_action() the done queue (curl_multi_info_read) is drained.
 * Completion callbacks run from the loop, never from inside af_http_client_send(); a cancel
 * is reported through a zero-delay event for the same reason.
 *
 * Everything here runs on the loop thread. A done callback may send or cancel requests, but
 * must not destroy its own client (the caller still walks curl's done queue).
 */
#include "http_client.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "log.h"

#define AF_HTTP_CLIENT_DEFAULT_TIMEOUT_MS 30000
#define AF_HTTP_CLIENT_DEFAULT_MAX_RESP   (1024 * 1024)
#define AF_HTTP_CLIENT_MAX_RETRY_AFTER    64 /* bytes of a Retry-After value we keep */
/* Idle keep-alive connections curl may cache. Its default (4 x the handles currently added)
 * shrinks whenever a burst of requests ends, and then closes connections that the next burst
 * opens again: a TCP handshake per few requests. A worker keeps up to worker.concurrency
 * calls in flight to a handful of hosts, so the cache is sized for that. */
#define AF_HTTP_CLIENT_MAX_IDLE_CONNS 1024
/* Finished easy handles kept for reuse, saving curl's large per-handle allocation and
 * initialisation on every request. As many as connections are cached: with fewer, a worker
 * with more calls in flight than the pool holds set up and freed a handle for most of them
 * (bench/run, 2 workers at concurrency 512). */
#define AF_HTTP_CLIENT_EASY_POOL AF_HTTP_CLIENT_MAX_IDLE_CONNS
/* Bodies over this size get an empty "Expect:" line, which stops curl sending
 * "Expect: 100-continue" and waiting a second for an answer evhttp and most APIs never send.
 * curl 7.88 asks only for bodies over 1 MiB (older ones over 1 KiB); below this the line is
 * left out, because curl compares every line of the list against each header it may add. */
#define AF_HTTP_CLIENT_EXPECT_MIN 1024

typedef struct af_http_xfer_s af_http_xfer_t;

/* A pooled handle keeps the options of its last request (curl_easy_reset costs as much as a
 * few requests' worth of options). The next request of the same shape, in practice nearly
 * every one, sets only what differs per request; any other shape resets it first. */
typedef struct af_http_pooled_s {
        CURL *easy;
        char method[16]; /* of its last request; "" when its options are curl's defaults */
        bool posts;      /* its last request set CURLOPT_POSTFIELDS */
        /* Per-request options it already holds, so that an equal one is not set again (a URL
         * is a free and a strdup in curl). Meaningful only while method[0] is set. */
        char *url;            /* owned copy of its CURLOPT_URL, or NULL */
        long timeout_ms;      /* its CURLOPT_TIMEOUT_MS */
        curl_off_t max_bytes; /* its CURLOPT_MAXFILESIZE_LARGE */
} af_http_pooled_t;

/* What the loop watches for one fd number. Entries live as long as the client, indexed by fd,
 * and serve whatever socket has that number next. */
typedef struct af_http_sock_s {
        struct event *ev; /* with the fd of its index; NULL until first armed */
        short armed;      /* EV_READ | EV_WRITE libevent watches; 0 = not added */
} af_http_sock_t;

struct af_http_client_s {
        af_loop_t *loop;
        CURLM *multi;
        struct event_base *base;
        struct event *timer_ev;  /* curl's one timer */
        bool timer_zero;         /* timer_ev is pending with a zero delay */
        struct event *cancel_ev; /* zero-delay: report cancelled transfers */
        af_http_sock_t *socks;   /* by fd number, socks_cap of them (zeroed: never armed) */
        int socks_cap;
        af_http_client_opts_t opts;
        uint64_t next_id;
        af_http_xfer_t *head;      /* transfers in curl (doubly linked) */
        af_http_xfer_t *cancelled; /* removed from curl, callback pending (singly) */
        int in_flight;             /* both lists: accepted, callback not yet called */
        af_http_pooled_t easy_pool[AF_HTTP_CLIENT_EASY_POOL]; /* handles ready for reuse */
        int easy_pool_cnt;
        /* No proxy variable in the environment (read once): every handle says "no proxy",
         * which spares curl reading five variables on every request. */
        bool no_proxy_env;
};

/* One allocation per request: this struct, then the header list's nodes, the header lines
 * and the body, which curl reads in place (CURLOPT_HTTPHEADER, CURLOPT_POSTFIELDS) until the
 * transfer is freed. */
struct af_http_xfer_s {
        af_http_client_t *hc;
        uint64_t id;
        CURL *easy;
        af_http_pooled_t shape;     /* what easy was last set up for (method, body) */
        struct curl_slist *headers; /* nodes inside this allocation: never curl_slist_free_all */
        af_buf_t resp;              /* capped at max_response_bytes */
        bool too_large;             /* the write callback refused more */
        bool has_retry_after;
        char retry_after[AF_HTTP_CLIENT_MAX_RETRY_AFTER];
        int64_t start_ms; /* monotonic */
        af_http_done_cb_t *cb;
        void *opaque;
        af_http_xfer_t *prev, *next;
};

static void client_check_done(af_http_client_t *hc);

/* ---- transfers ----------------------------------------------------------------------------- */

static void xfer_unlink(af_http_xfer_t *x) {
        af_http_client_t *hc = x->hc;
        if (x->prev)
                x->prev->next = x->next;
        else
                hc->head = x->next;
        if (x->next)
                x->next->prev = x->prev;
        x->prev = x->next = NULL;
}

/* A handle for x's transfer into x->easy and x->shape: the last pooled one, reset unless it
 * was set up for the same method and body use, or a new one. @returns false on OOM. */
static bool client_easy_get(af_http_client_t *hc, af_http_xfer_t *x, const char *method,
                            bool posts) {
        if (hc->easy_pool_cnt > 0) {
                af_http_pooled_t *p = &hc->easy_pool[--hc->easy_pool_cnt];
                x->easy = p->easy;
                x->shape = *p;
                if (strcmp(p->method, method) || p->posts != posts) {
                        curl_easy_reset(x->easy);
                        x->shape.method[0] = '\0';
                        free(x->shape.url);
                        x->shape.url = NULL;
                }
        } else {
                x->easy = curl_easy_init();
                x->shape.method[0] = '\0';
                x->shape.url = NULL;
        }
        if (!x->shape.method[0]) {
                x->shape.timeout_ms = -1;
                x->shape.max_bytes = -1;
        }
        return x->easy != NULL;
}

/* Close a handle that is not in the multi, with what its shape owns. */
static void client_easy_cleanup(af_http_pooled_t *p) {
        curl_easy_cleanup(p->easy);
        p->easy = NULL;
        free(p->url);
        p->url = NULL;
}

/* Free a transfer; its handle, no longer in the multi, goes back to the pool. */
static void xfer_free(af_http_xfer_t *x) {
        if (!x)
                return;
        if (x->easy && x->hc->easy_pool_cnt < AF_HTTP_CLIENT_EASY_POOL) {
                /* Its options still point into x (private, write data, headers, body): every
                 * request sets those before it starts. The connection it used stays in the
                 * multi's cache. */
                x->shape.easy = x->easy;
                x->hc->easy_pool[x->hc->easy_pool_cnt++] = x->shape;
        } else if (x->easy) {
                x->shape.easy = x->easy;
                client_easy_cleanup(&x->shape);
        }
        af_buf_free(&x->resp);
        free(x);
}

/* Write callback: append into the capped buffer. Returning less than asked makes libcurl
 * abort the transfer with CURLE_WRITE_ERROR, which we report as AF_ERR_TOO_LARGE. */
static size_t xfer_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
        af_http_xfer_t *x = userdata;
        size_t n = size * nmemb;
        if (af_buf_append(&x->resp, ptr, n) != AF_OK) {
                x->too_large = true;
                return 0;
        }
        return n;
}

/* Header callback: remember Retry-After of the final response (a new status line, e.g. after
 * "100 Continue", starts over). */
static size_t xfer_header_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
        af_http_xfer_t *x = userdata;
        size_t n = size * nmemb;
        static const char name[] = "retry-after:";

        if (n >= 5 && !strncmp(ptr, "HTTP/", 5)) {
                x->has_retry_after = false;
        } else if (n > sizeof(name) - 1 && !strncasecmp(ptr, name, sizeof(name) - 1)) {
                const char *v = ptr + sizeof(name) - 1, *end = ptr + n;
                while (v < end && (*v == ' ' || *v == '\t'))
                        v++;
                while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
                        end--;
                size_t len = (size_t) (end - v);
                if (len > 0 && len < sizeof(x->retry_after)) {
                        memcpy(x->retry_after, v, len);
                        x->retry_after[len] = '\0';
                        x->has_retry_after = true;
                }
        }
        return n;
}

/* @returns Retry-After in ms (delta-seconds or an HTTP-date relative to now), -1 if absent or
 * unparseable. A date in the past is 0. */
static int64_t xfer_retry_after_ms(const af_http_xfer_t *x) {
        int64_t ms = -1;
        if (!x->has_retry_after)
                goto out;
        const char *v = x->retry_after;
        if (*v >= '0' && *v <= '9') {
                char *end;
                long long secs = strtoll(v, &end, 10);
                if (*end == '\0' && secs >= 0 && secs < INT64_MAX / 1000)
                        ms = (int64_t) secs * 1000;
                goto out;
        }
        time_t when = curl_getdate(v, NULL);
        if (when == -1)
                goto out;
        int64_t delta = (int64_t) when * 1000 - af_clock_wall_ms();
        ms = delta > 0 ? delta : 0;
out:
        return ms;
}

/* Map a libcurl result onto our vocabulary; transport-level failures are retriable. */
static void xfer_map_error(af_http_xfer_t *x, CURLcode rc, af_error_t *err) {
        const char *what = curl_easy_strerror(rc);
        switch (rc) {
        case CURLE_OPERATION_TIMEDOUT:
                af_error_set(err, AF_ERR_TIMEOUT, "http request timed out: %s", what);
                break;
        case CURLE_FILESIZE_EXCEEDED:
                af_error_set(err, AF_ERR_TOO_LARGE, "http response over %zu bytes", x->resp.cap);
                break;
        case CURLE_WRITE_ERROR:
                if (x->too_large) {
                        af_error_set(err, AF_ERR_TOO_LARGE, "http response over %zu bytes",
                                     x->resp.cap);
                        break;
                }
                af_error_set_retriable(err, AF_ERR_INTERNAL, false, "http: %s", what);
                break;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_BAD_FUNCTION_ARGUMENT:
                af_error_set_retriable(err, AF_ERR_INVALID, false, "http request: %s", what);
                break;
        case CURLE_OUT_OF_MEMORY:
                af_error_set(err, AF_ERR_NOMEM, "http: %s", what);
                break;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
                /* Retrying does not fix a certificate. */
                af_error_set_retriable(err, AF_ERR_TRANSPORT, false, "http tls: %s", what);
                break;
        default:
                /* connect, resolve, send, recv, empty reply, partial body, tls handshake */
                af_error_set_retriable(err, AF_ERR_TRANSPORT, true, "http transport: %s", what);
                break;
        }
}

const char *af_http_response_header(const af_http_response_t *resp, const char *name) {
        struct curl_header *h = NULL;
        if (!resp || !resp->handle ||
            curl_easy_header(resp->handle, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || !h)
                return NULL;
        return h->value;
}

/* Finish a transfer curl reported done: remove it, call the callback, free it. */
static void xfer_done(af_http_xfer_t *x, CURLcode rc) {
        af_http_client_t *hc = x->hc;
        af_error_t err;
        af_http_response_t resp;
        const af_http_response_t *respp = NULL;

        curl_multi_remove_handle(hc->multi, x->easy);
        xfer_unlink(x);
        hc->in_flight--;
        af_error_clear(&err);

        if (rc == CURLE_OK) {
                long status = 0;
                char *ctype = NULL;
                curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
                curl_easy_getinfo(x->easy, CURLINFO_CONTENT_TYPE, &ctype);
                memset(&resp, 0, sizeof(resp));
                resp.status = (int) status;
                resp.body = af_buf_str(&x->resp);
                resp.body_len = x->resp.len;
                resp.content_type = ctype;
                resp.retry_after_ms = xfer_retry_after_ms(x);
                resp.elapsed_ms = af_clock_mono_ms() - x->start_ms;
                resp.handle = x->easy;
                respp = &resp;
        } else {
                xfer_map_error(x, rc, &err);
                af_debug("http %s: %s", af_err2code(err.err), err.msg);
        }
        x->cb(respp, &err, x->opaque);
        xfer_free(x);
}

/* ---- libevent <-> curl multi --------------------------------------------------------------- */

static void client_check_done(af_http_client_t *hc) {
        CURLMsg *msg;
        int pending;
        while ((msg = curl_multi_info_read(hc->multi, &pending))) {
                if (msg->msg != CURLMSG_DONE)
                        continue;
                af_http_xfer_t *x = NULL;
                CURLcode rc = msg->data.result;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &x);
                /* msg is invalid once the handle is removed: rc was copied above. */
                xfer_done(x, rc);
        }
}

static void client_sock_event_cb(evutil_socket_t fd, short what, void *arg);

/* The state of fd number s, the table grown to hold it if asked. @returns NULL if absent (or
 * on OOM). Entries hold only a pointer to their event, so growing the table moves nothing
 * libevent knows. */
static af_http_sock_t *client_sock(af_http_client_t *hc, curl_socket_t s, bool create) {
        if (s < 0)
                return NULL;
        if (s >= hc->socks_cap) {
                if (!create)
                        return NULL;
                int cap = hc->socks_cap ? hc->socks_cap : 64;
                while (cap <= s)
                        cap *= 2;
                af_http_sock_t *socks = realloc(hc->socks, (size_t) cap * sizeof(*socks));
                if (!socks)
                        return NULL;
                memset(socks + hc->socks_cap, 0, (size_t) (cap - hc->socks_cap) * sizeof(*socks));
                hc->socks = socks;
                hc->socks_cap = cap;
        }
        return &hc->socks[s];
}

/* Make libevent watch exactly kind (EV_READ | EV_WRITE, 0 = nothing) on fd s; nothing to do,
 * and no epoll_ctl, when it already does. @returns false on OOM. A failed event_add is left
 * to the transfer's timeout, as it always was, and tried again at the next call. */
static bool client_sock_arm(af_http_client_t *hc, af_http_sock_t *sk, curl_socket_t s, short kind) {
        if (sk->armed == kind)
                return true;
        if (sk->armed)
                event_del(sk->ev);
        sk->armed = 0;
        if (!kind)
                return true;
        if (!sk->ev) {
                sk->ev = event_new(hc->base, s, kind | EV_PERSIST, client_sock_event_cb, hc);
                if (!sk->ev)
                        return false;
        } else {
                event_assign(sk->ev, hc->base, s, kind | EV_PERSIST, client_sock_event_cb, hc);
        }
        if (event_add(sk->ev, NULL) == 0)
                sk->armed = kind;
        return true;
}

static void client_sock_event_cb(evutil_socket_t fd, short what, void *arg) {
        af_http_client_t *hc = arg;
        int running = 0;
        int flags = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
                    ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
        curl_multi_socket_action(hc->multi, fd, flags, &running);
        client_check_done(hc);
}

static void client_timer_event_cb(evutil_socket_t fd, short what, void *arg) {
        af_http_client_t *hc = arg;
        int running = 0;
        hc->timer_zero = false;
        curl_multi_socket_action(hc->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        client_check_done(hc);
}

/* CURLMOPT_SOCKETFUNCTION: only bookkeeping, never back into libcurl. */
static int client_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
        af_http_client_t *hc = userp;
        af_http_sock_t *sk = client_sock(hc, s, what != CURL_POLL_REMOVE);

        if (what == CURL_POLL_REMOVE) {
                if (sk)
                        client_sock_arm(hc, sk, s, 0);
                return 0;
        }
        if (!sk)
                return -1;
        short kind =
                ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
        return client_sock_arm(hc, sk, s, kind) ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION: one timer, replaced each time; 0 is a zero-delay event. */
static int client_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
        af_http_client_t *hc = userp;
        if (timeout_ms < 0) {
                evtimer_del(hc->timer_ev);
                hc->timer_zero = false;
                return 0;
        }
        /* Every request added asks for a zero timeout: one pending zero-delay run is enough. */
        if (timeout_ms == 0 && hc->timer_zero)
                return 0;
        hc->timer_zero = timeout_ms == 0;
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        evtimer_add(hc->timer_ev, &tv);
        return 0;
}

/* Zero-delay event: report every cancelled transfer. */
static void client_cancel_event_cb(evutil_socket_t fd, short what, void *arg) {
        af_http_client_t *hc = arg;
        af_http_xfer_t *x;
        while ((x = hc->cancelled)) {
                hc->cancelled = x->next;
                x->next = NULL;
                hc->in_flight--;
                af_error_t err;
                af_error_set(&err, AF_ERR_CANCELLED, "http request %llu cancelled",
                             (unsigned long long) x->id);
                x->cb(NULL, &err, x->opaque);
                xfer_free(x);
        }
}

/* ---- public -------------------------------------------------------------------------------- */

af_http_client_t *af_http_client_new(af_loop_t *loop, const af_http_client_opts_t *opts,
                                     char *errstr, size_t errstr_size) {
        af_http_client_t *hc = NULL;
        struct event_base *base = af_loop_base(loop);

        /* Idempotent after the first call; not thread-safe, but each process starts its loop
         * (and so its clients) from main before any other thread exists. */
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                af_errstr(AF_ERR_INTERNAL, errstr, errstr_size, "curl_global_init failed");
                goto fail;
        }
        hc = calloc(1, sizeof(*hc));
        if (!hc) {
                af_errstr(AF_ERR_NOMEM, errstr, errstr_size, "out of memory");
                goto fail;
        }
        hc->loop = loop;
        hc->base = base;
        if (opts)
                hc->opts = *opts;
        if (hc->opts.default_timeout_ms <= 0)
                hc->opts.default_timeout_ms = AF_HTTP_CLIENT_DEFAULT_TIMEOUT_MS;
        if (hc->opts.default_max_response_bytes == 0)
                hc->opts.default_max_response_bytes = AF_HTTP_CLIENT_DEFAULT_MAX_RESP;
        hc->next_id = 1;
        hc->multi = curl_multi_init();
        hc->timer_ev = evtimer_new(base, client_timer_event_cb, hc);
        hc->cancel_ev = evtimer_new(base, client_cancel_event_cb, hc);
        if (!hc->multi || !hc->timer_ev || !hc->cancel_ev) {
                af_errstr(AF_ERR_INTERNAL, errstr, errstr_size,
                          "cannot set up curl multi on the loop");
                goto fail;
        }
        curl_multi_setopt(hc->multi, CURLMOPT_SOCKETFUNCTION, client_socket_cb);
        curl_multi_setopt(hc->multi, CURLMOPT_SOCKETDATA, hc);
        curl_multi_setopt(hc->multi, CURLMOPT_TIMERFUNCTION, client_timer_cb);
        curl_multi_setopt(hc->multi, CURLMOPT_TIMERDATA, hc);
        curl_multi_setopt(hc->multi, CURLMOPT_MAXCONNECTS, (long) AF_HTTP_CLIENT_MAX_IDLE_CONNS);
        /* The variables curl's proxy detection reads (url.c: no_proxy and the scheme's proxy
         * or all_proxy; HTTP_PROXY in capitals is ignored on purpose). */
        hc->no_proxy_env = true;
        static const char *const proxy_vars[] = {"no_proxy",    "NO_PROXY",    "http_proxy",
                                                 "https_proxy", "HTTPS_PROXY", "all_proxy",
                                                 "ALL_PROXY"};
        for (size_t i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
                if (getenv(proxy_vars[i]))
                        hc->no_proxy_env = false;
        if (hc->opts.max_host_connections > 0)
                curl_multi_setopt(hc->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                                  hc->opts.max_host_connections);
        return hc;
fail:
        af_http_client_destroy(hc);
        return NULL;
}

void af_http_client_destroy(af_http_client_t *hc) {
        af_http_xfer_t *x;
        if (!hc)
                return;
        /* Cancelled ones first (their events will not fire any more), then those in curl. */
        if (hc->cancel_ev)
                client_cancel_event_cb(-1, 0, hc);
        while ((x = hc->head)) {
                if (hc->multi)
                        curl_multi_remove_handle(hc->multi, x->easy);
                xfer_unlink(x);
                x->next = hc->cancelled;
                hc->cancelled = x;
        }
        if (hc->cancel_ev) {
                client_cancel_event_cb(-1, 0, hc);
                event_free(hc->cancel_ev);
        }
        /* Cleaning up the multi closes the cached connections, which disarms their events
         * through CURL_POLL_REMOVE: the socket table must still exist then. */
        if (hc->multi)
                curl_multi_cleanup(hc->multi);
        if (hc->timer_ev)
                event_free(hc->timer_ev);
        while (hc->easy_pool_cnt > 0)
                client_easy_cleanup(&hc->easy_pool[--hc->easy_pool_cnt]);
        for (int fd = 0; fd < hc->socks_cap; fd++)
                if (hc->socks[fd].ev)
                        event_free(hc->socks[fd].ev);
        free(hc->socks);
        free(hc);
}

af_err_t af_http_client_send(af_http_client_t *hc, const af_http_request_t *req,
                             af_http_done_cb_t *cb, void *opaque, uint64_t *idp) {
        af_err_t err = AF_OK;
        af_http_xfer_t *x = NULL;
        const char *method;

        if (!hc || !req || !req->url || !cb) {
                err = AF_ERR_INVALID;
                goto out;
        }
        method = req->method ? req->method : "GET";
        bool posts = strcmp(method, "GET") && strcmp(method, "HEAD") &&
                     (req->body || !strcmp(method, "POST"));
        size_t body_len = req->body ? req->body_len : 0;
        /* "Expect:" empty: no 1 s wait for a 100-continue that evhttp and most APIs never
         * send (see AF_HTTP_CLIENT_EXPECT_MIN). */
        static const char expect[] = "Expect:";
        size_t nexp = posts && body_len > AF_HTTP_CLIENT_EXPECT_MIN ? 1 : 0;
        size_t nh = nexp, bytes = nexp ? sizeof(expect) : 0;
        for (const char *const *h = req->headers; h && *h; h++, nh++)
                bytes += strlen(*h) + 1;
        x = malloc(sizeof(*x) + nh * sizeof(struct curl_slist) + bytes + body_len + 1);
        if (!x) {
                err = AF_ERR_NOMEM;
                goto out;
        }
        memset(x, 0, sizeof(*x));
        x->hc = hc;
        x->id = hc->next_id++;
        x->cb = cb;
        x->opaque = opaque;
        af_buf_init(&x->resp, req->max_response_bytes ? req->max_response_bytes
                                                      : hc->opts.default_max_response_bytes);
        if (!client_easy_get(hc, x, method, posts)) {
                err = AF_ERR_NOMEM;
                goto out;
        }
        /* The list's nodes, then the lines they point to, then the body. */
        x->headers = nh ? (struct curl_slist *) (x + 1) : NULL;
        char *p = (char *) ((struct curl_slist *) (x + 1) + nh);
        for (size_t i = 0; i < nh; i++) {
                const char *line = i >= nexp ? req->headers[i - nexp] : expect;
                size_t len = strlen(line) + 1;
                memcpy(p, line, len);
                x->headers[i].data = p;
                x->headers[i].next = i + 1 < nh ? &x->headers[i + 1] : NULL;
                p += len;
        }
        char *body = p;
        if (body_len)
                memcpy(body, req->body, body_len);
        body[body_len] = '\0';

        CURL *e = x->easy;
        if (!x->shape.method[0]) {
                /* A new or reset handle: what stays the same for every request of this shape.
                 * A method name too long to remember simply resets the handle next time. */
                curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
                /* URLs are built from templates over task payloads: never let one turn into
                 * file:// or another protocol. */
                curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
                curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, xfer_write_cb);
                curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, xfer_header_cb);
                curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
                if (hc->no_proxy_env) {
                        curl_easy_setopt(e, CURLOPT_PROXY, "");
                        curl_easy_setopt(e, CURLOPT_NOPROXY, "");
                }
                if (!strcmp(method, "GET")) {
                        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
                } else if (!strcmp(method, "HEAD")) {
                        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
                } else if (strcmp(method, "POST") &&
                           curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK) {
                        err = AF_ERR_NOMEM;
                        goto out;
                }
                if (strlen(method) < sizeof(x->shape.method))
                        strcpy(x->shape.method, method);
                x->shape.posts = posts;
        }
        curl_easy_setopt(e, CURLOPT_PRIVATE, x);
        if (!x->shape.url || strcmp(x->shape.url, req->url)) {
                free(x->shape.url);
                x->shape.url = strdup(req->url);
                if (!x->shape.url || curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK) {
                        free(x->shape.url);
                        x->shape.url = NULL; /* set again next time, whatever it holds */
                        err = AF_ERR_NOMEM;
                        goto out;
                }
        }
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
        long timeout_ms =
                (long) (req->timeout_ms > 0 ? req->timeout_ms : hc->opts.default_timeout_ms);
        if (x->shape.timeout_ms != timeout_ms) {
                curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
                x->shape.timeout_ms = timeout_ms;
        }
        if (x->shape.max_bytes != (curl_off_t) x->resp.cap) {
                curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) x->resp.cap);
                x->shape.max_bytes = (curl_off_t) x->resp.cap;
        }
        curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
        if (posts) {
                /* Exactly body_len bytes, read in place from x's allocation. */
                curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
                curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        }

        x->start_ms = af_clock_mono_ms();
        /* Linked before adding so that the socket/timer callbacks it may trigger find it. */
        x->next = hc->head;
        if (hc->head)
                hc->head->prev = x;
        hc->head = x;
        if (curl_multi_add_handle(hc->multi, e) != CURLM_OK) {
                xfer_unlink(x);
                err = AF_ERR_INTERNAL;
                goto out;
        }
        hc->in_flight++;
        if (idp)
                *idp = x->id;
        x = NULL;
out:
        xfer_free(x);
        return err;
}

void af_http_client_cancel(af_http_client_t *hc, uint64_t id) {
        af_http_xfer_t *x;
        if (!hc)
                return;
        for (x = hc->head; x; x = x->next)
                if (x->id == id)
                        break;
        if (!x)
                return; /* done, already cancelled, or never ours */
        curl_multi_remove_handle(hc->multi, x->easy);
        xfer_unlink(x);
        x->next = hc->cancelled;
        hc->cancelled = x;
        /* Reported from the loop: the caller may be holding state the callback frees. */
        struct timeval zero = {0, 0};
        evtimer_add(hc->cancel_ev, &zero);
}

int af_http_client_in_flight(const af_http_client_t *hc) {
        return hc ? hc->in_flight : 0;
}
