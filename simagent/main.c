/*
 * agentfleet-simagent: the stand-in for everything a user brings from outside — an
 * OpenAI-compatible LLM and the claims integrations — on one HTTP server (server.h), so
 * that the demo, the tests and the benchmarks run without an API key or a real CRM.
 *
 *   agentfleet-simagent [--config FILE] [--set name=value]... [--port N]
 *
 * On start it prints one JSON line on stdout with the bound port (scripts read it, which
 * matters with --port 0); SIGTERM or SIGINT answers what is parked and exits 0.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "server.h"

#define SIM_VERSION  "0.1.0"
#define SIM_MAX_BODY (4 * 1024 * 1024) /* a long agent conversation stays well below */
#define SIM_MAX_SETS 64

static void sim_usage(FILE *out) {
        fprintf(out, "Usage: agentfleet-simagent [--config FILE] [--set name=value]... [--port N]\n"
                     "       agentfleet-simagent --help | --version\n\n"
                     "Simulated OpenAI-compatible LLM and claims integrations for agentfleet.\n"
                     "--port overrides simagent.port (0: any free port; the bound port is printed\n"
                     "as a JSON line on stdout).\n\n");
        af_config_print_help(out, AF_SCOPE_SIMAGENT);
}

static void sim_on_signal(af_loop_t *loop, int signo, void *opaque) {
        if (signo == SIGHUP) {
                af_info("SIGHUP: simagent has no catalog to reload");
                return;
        }
        af_info("signal %d: stopping", signo);
        af_loop_stop(loop);
}

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                {"config", required_argument, NULL, 'c'}, {"set", required_argument, NULL, 's'},
                {"port", required_argument, NULL, 'p'},   {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
        };
        const char *config_path = NULL, *port_arg = NULL;
        char *sets[SIM_MAX_SETS];
        int set_cnt = 0, opt, rc = 2 /* until it runs: it did not start */, level;
        char errstr[512];
        af_config_t *conf = NULL;
        af_loop_t *loop = NULL;
        af_sim_server_t *ss = NULL;
        af_sim_opts_t so;
        const char *api_key;
        char *end;
        long port = -1;

        while ((opt = getopt_long(argc, argv, "c:s:p:hV", longopts, NULL)) != -1) {
                switch (opt) {
                case 'c':
                        config_path = optarg;
                        break;
                case 's':
                        if (set_cnt == SIM_MAX_SETS) {
                                fprintf(stderr, "agentfleet-simagent: too many --set\n");
                                goto out;
                        }
                        sets[set_cnt++] = optarg;
                        break;
                case 'p':
                        port_arg = optarg;
                        break;
                case 'h':
                        sim_usage(stdout);
                        rc = 0;
                        goto out;
                case 'V':
                        printf("agentfleet-simagent %s\n", SIM_VERSION);
                        rc = 0;
                        goto out;
                default:
                        sim_usage(stderr);
                        rc = 2;
                        goto out;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "agentfleet-simagent: unexpected argument \"%s\"\n", argv[optind]);
                rc = 2;
                goto out;
        }
        if (port_arg) {
                port = strtol(port_arg, &end, 10);
                if (*end || end == port_arg || port < 0 || port > 65535) {
                        fprintf(stderr, "agentfleet-simagent: --port %s: expected 0..65535\n",
                                port_arg);
                        rc = 2;
                        goto out;
                }
        }

        if (!(conf = af_config_new())) {
                fprintf(stderr, "agentfleet-simagent: out of memory\n");
                goto out;
        }
        if (af_config_load(conf, config_path, errstr, sizeof(errstr)) != AF_OK) {
                fprintf(stderr, "agentfleet-simagent: %s\n", errstr);
                goto out;
        }
        for (int i = 0; i < set_cnt; i++) {
                if (af_config_set_arg(conf, sets[i], errstr, sizeof(errstr)) != AF_OK) {
                        fprintf(stderr, "agentfleet-simagent: %s\n", errstr);
                        goto out;
                }
        }
        level = af_log_level_parse(af_config_str(conf, "log.level"));
        af_log_init("simagent", level < 0 ? AF_LOG_INFO : (af_log_level_t) level);
        api_key = af_config_str(conf, "simagent.api_key");
        if (!api_key)
                api_key = "";

        so = (af_sim_opts_t){
                .address = af_config_str(conf, "simagent.address"),
                .port = port >= 0 ? (int) port : (int) af_config_int(conf, "simagent.port"),
                .seed = (uint64_t) af_config_int(conf, "simagent.seed"),
                .latency_ms = af_config_int(conf, "simagent.latency_ms"),
                .jitter_ms = af_config_int(conf, "simagent.latency_jitter_ms"),
                .error_rate = (int) af_config_int(conf, "simagent.error_rate"),
                .rate429 = (int) af_config_int(conf, "simagent.rate429"),
                .timeout_rate = (int) af_config_int(conf, "simagent.timeout_rate"),
                .retry_after_ms = af_config_int(conf, "simagent.retry_after"),
                .prompt_tokens = af_config_int(conf, "simagent.prompt_tokens"),
                .completion_tokens = af_config_int(conf, "simagent.completion_tokens"),
                .api_key = api_key,
                .max_body = SIM_MAX_BODY,
        };

        /* Each request is answered inside its read callback, so evhttp turns the connection
         * from reading to writing and back again in one loop pass: four epoll_ctl calls per
         * request. libevent's epoll changelist merges them into two (sys time per /noop
         * request -20 %). It is opt-in (loop.h) because libevent calls it unsafe with dup()ed
         * file descriptors; this process has none (evhttp's sockets and libevent's own signal
         * socketpair), and it is the only process that turns it on. */
        if (!(loop = af_loop_new_opts(&(af_loop_opts_t){.epoll_changelist = true}, errstr,
                                      sizeof(errstr)))) {
                af_error("loop: %s", errstr);
                goto out;
        }
        if (!(ss = af_sim_server_new(loop, &so, errstr, sizeof(errstr)))) {
                af_error("cannot serve on %s:%d: %s", so.address, so.port, errstr);
                goto out;
        }
        af_loop_on_signal(loop, SIGTERM, sim_on_signal, NULL);
        af_loop_on_signal(loop, SIGINT, sim_on_signal, NULL);
        af_loop_on_signal(loop, SIGHUP, sim_on_signal, NULL);

        af_info("listening on %s:%d (seed %llu, latency %lld+-%lld ms, errors %d, 429 %d, "
                "hangs %d permille, api key %s)",
                so.address, af_sim_server_port(ss), (unsigned long long) so.seed,
                (long long) so.latency_ms, (long long) so.jitter_ms, so.error_rate, so.rate429,
                so.timeout_rate, *api_key ? "required" : "not required");
        printf("{\"component\":\"simagent\",\"event\":\"listening\",\"address\":\"%s\","
               "\"port\":%d}\n",
               so.address, af_sim_server_port(ss));
        fflush(stdout);

        rc = af_loop_run(loop) == 0 ? 0 : 1;
        af_info("stopped");
out:
        af_sim_server_destroy(ss);
        af_loop_destroy(loop);
        af_config_destroy(conf);
        return rc;
}
