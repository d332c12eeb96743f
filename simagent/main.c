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

/* Settings simagent reads that the shared table may not have (yet): taken from the table
 * when it has them, else from --set or their environment variable. */
typedef struct sim_extra_s {
        const char *name;
        const char *type; /* as --help names it */
        const char *env;
        const char *def;
        const char *desc;
        const char *value; /* from --set, borrowed from argv */
} sim_extra_t;

static sim_extra_t sim_extras[] = {
        {"simagent.api_key", "string", "AGENTFLEET_SIMAGENT_API_KEY", "",
         "Bearer key the simulated LLM requires on /v1 (empty: none); secret.", NULL},
        {"simagent.timeout_rate", "integer", "AGENTFLEET_SIMAGENT_TIMEOUT_RATE", "0",
         "Share of requests never answered (the client must time out), per mille, 0..1000.", NULL},
};
#define SIM_EXTRA_CNT (sizeof(sim_extras) / sizeof(sim_extras[0]))

static bool sim_in_table(const char *name) {
        for (size_t i = 0; i < af_settings_cnt; i++)
                if (strcmp(af_settings[i].name, name) == 0)
                        return true;
        return false;
}

static sim_extra_t *sim_extra(const char *name) {
        for (size_t i = 0; i < SIM_EXTRA_CNT; i++)
                if (strcmp(sim_extras[i].name, name) == 0)
                        return &sim_extras[i];
        return NULL;
}

/* @returns the value of an extra setting (table, --set, environment, default). */
static const char *sim_extra_value(const af_config_t *conf, const char *name) {
        sim_extra_t *x = sim_extra(name);
        const char *v;

        if (sim_in_table(name))
                return af_config_str(conf, name) ? af_config_str(conf, name) : "";
        if (x->value)
                return x->value;
        if ((v = getenv(x->env)))
                return v;
        return x->def;
}

static void sim_usage(FILE *out) {
        fprintf(out, "Usage: agentfleet-simagent [--config FILE] [--set name=value]... [--port N]\n"
                     "       agentfleet-simagent --help | --version\n\n"
                     "Simulated OpenAI-compatible LLM and claims integrations for agentfleet.\n"
                     "--port overrides simagent.port (0: any free port; the bound port is printed\n"
                     "as a JSON line on stdout).\n\n");
        af_config_print_help(out, AF_SCOPE_SIMAGENT);
        for (size_t i = 0; i < SIM_EXTRA_CNT; i++)
                if (!sim_in_table(sim_extras[i].name))
                        fprintf(out, "  %-28s %-8s default %s\n      %s (also %s)\n",
                                sim_extras[i].name, sim_extras[i].type,
                                *sim_extras[i].def ? sim_extras[i].def : "(empty)",
                                sim_extras[i].desc, sim_extras[i].env);
}

static void sim_on_signal(af_loop_t *loop, int signo, void *opaque) {
        if (signo == SIGHUP) {
                af_info("SIGHUP: simagent has no catalog to reload");
                return;
        }
        af_info("signal %d: stopping", signo);
        af_loop_stop(loop);
}

/* Apply one --set: a table setting through config, an extra one here. */
static af_err_t sim_set(af_config_t *conf, char *arg, char *errstr, size_t errstr_size) {
        char *eq = strchr(arg, '=');
        sim_extra_t *x;
        af_err_t err;

        if (!eq)
                return af_errstr(AF_ERR_CONFIG, errstr, errstr_size,
                                 "--set %s: expected name=value", arg);
        *eq = '\0';
        if (!sim_in_table(arg) && (x = sim_extra(arg))) {
                x->value = eq + 1;
                err = AF_OK;
        } else {
                err = af_config_set(conf, arg, eq + 1, errstr, errstr_size);
        }
        *eq = '=';
        return err;
}

int main(int argc, char **argv) {
        static const struct option longopts[] = {
                {"config", required_argument, NULL, 'c'}, {"set", required_argument, NULL, 's'},
                {"port", required_argument, NULL, 'p'},   {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
        };
        const char *config_path = NULL, *port_arg = NULL;
        char *sets[SIM_MAX_SETS];
        int set_cnt = 0, opt, rc = 1, level;
        char errstr[512];
        af_config_t *conf = NULL;
        af_loop_t *loop = NULL;
        af_sim_server_t *ss = NULL;
        af_sim_opts_t so;
        const char *api_key, *timeout_rate;
        char *end;
        long port = -1, rate;

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
                if (sim_set(conf, sets[i], errstr, sizeof(errstr)) != AF_OK) {
                        fprintf(stderr, "agentfleet-simagent: %s\n", errstr);
                        goto out;
                }
        }
        level = af_log_level_parse(af_config_str(conf, "log.level"));
        af_log_init("simagent", level < 0 ? AF_LOG_INFO : (af_log_level_t) level);
        api_key = sim_extra_value(conf, "simagent.api_key");
        af_log_redact_add(api_key);

        so = (af_sim_opts_t){
                .address = af_config_str(conf, "simagent.address"),
                .port = port >= 0 ? (int) port : (int) af_config_int(conf, "simagent.port"),
                .seed = (uint64_t) af_config_int(conf, "simagent.seed"),
                .latency_ms = af_config_int(conf, "simagent.latency_ms"),
                .jitter_ms = af_config_int(conf, "simagent.latency_jitter_ms"),
                .error_rate = (int) af_config_int(conf, "simagent.error_rate"),
                .rate429 = (int) af_config_int(conf, "simagent.rate429"),
                .timeout_rate = -1,
                .retry_after_ms = af_config_int(conf, "simagent.retry_after"),
                .prompt_tokens = af_config_int(conf, "simagent.prompt_tokens"),
                .completion_tokens = af_config_int(conf, "simagent.completion_tokens"),
                .api_key = api_key,
                .max_body = SIM_MAX_BODY,
        };
        timeout_rate = sim_extra_value(conf, "simagent.timeout_rate");
        rate = strtol(timeout_rate, &end, 10);
        if (!*timeout_rate || *end || rate < 0 || rate > 1000) {
                fprintf(stderr, "agentfleet-simagent: simagent.timeout_rate: expected an "
                                "integer in [0, 1000]\n");
                goto out;
        }
        so.timeout_rate = (int) rate;

        if (!(loop = af_loop_new(errstr, sizeof(errstr)))) {
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
