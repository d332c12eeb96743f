/*
 * main: `agentfleet`, the command-line client. It reads the same YAML config as the daemons
 * (cli.api_url, cli.token, and for the Kafka paths kafka.* and topic.prefix), applies
 * AGENTFLEET_* environment overrides and `--set`, builds the one loop, and hands the rest of
 * the command line to a command: submit, get, list, watch, cancel (the coordinator's HTTP
 * API) or drive (the load driver of the demo and the benchmark).
 *
 * Global options may stand before or after the command name; they are taken out first so
 * every command parses only its own.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

#define AF_CLI_VERSION "0.1.0"

typedef int(af_cli_cmd_fn_t)(af_cli_t *cli, int argc, char **argv);

static const struct {
        const char *name;
        af_cli_cmd_fn_t *fn;
        const char *summary;
} commands[] = {
        {"submit", af_cli_cmd_submit, "submit a task (payload from --payload-file or stdin)"},
        {"get", af_cli_cmd_get, "show one task: status, result, versions, timings"},
        {"list", af_cli_cmd_list, "search tasks by status and type, paginated"},
        {"watch", af_cli_cmd_watch, "follow a task to its end, printing each transition"},
        {"cancel", af_cli_cmd_cancel, "cancel a task (not started: never runs; running: told)"},
        {"drive", af_cli_cmd_drive, "load driver: submit N tasks, track results, summarize"},
};

static void usage(FILE *out) {
        fprintf(out, "usage: agentfleet [global options] COMMAND [options]\n"
                     "\n"
                     "commands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
        fprintf(out, "\n"
                     "global options (before or after the command):\n"
                     "  --config FILE       YAML config (default: $AGENTFLEET_CONFIG, else none)\n"
                     "  --set NAME=VALUE    override one setting (repeatable)\n"
                     "  --api-url URL       coordinator API (setting cli.api_url)\n"
                     "  --token TOKEN       bearer token (else $AGENTFLEET_TOKEN, else cli.token)\n"
                     "  --timeout DURATION  per HTTP request (default 30s)\n"
                     "  --json              machine-readable output on stdout\n"
                     "  --log-level LEVEL   debug|info|warn|error (default warn)\n"
                     "  --help, --version\n"
                     "\n"
                     "`agentfleet COMMAND --help` shows a command's options.\n"
                     "exit codes: 0 ok (watch: succeeded), 1 task ended not succeeded, 2 usage,\n"
                     "            3 auth (401/403), 4 not found, 5 server or network error\n"
                     "\n");
        af_config_print_help(out, AF_SCOPE_CLI);
}

/* The global options, taken out of argv wherever they stand. */
typedef struct globals_s {
        const char *config_path;
        const char *api_url;
        const char *token;
        const char *timeout;
        const char *log_level;
        const char *sets[64];
        int set_cnt;
        bool json;
        bool help;
        bool version;
} globals_t;

/* @returns the value of a global option that takes one ("--x v" or "--x=v"), advancing *ip;
 *          NULL if argv[*i] is not that option; sets *missing when the value is absent. */
static const char *take_value(char **argv, int argc, int *ip, const char *name, bool *missing) {
        size_t n = strlen(name);
        const char *a = argv[*ip];

        if (strncmp(a, name, n))
                return NULL;
        if (a[n] == '=')
                return a + n + 1;
        if (a[n] != '\0')
                return NULL;
        if (*ip + 1 >= argc) {
                *missing = true;
                return NULL;
        }
        (*ip)++;
        return argv[*ip];
}

/* Split argv into globals and the command's own arguments (cargv; argv[0] kept).
 * @returns 0, or -1 on a usage error (message printed). */
static int split_globals(int argc, char **argv, globals_t *g, int *cargcp, char **cargv) {
        int cargc = 0;
        bool rest = false; /* after "--" everything belongs to the command */

        cargv[cargc++] = argv[0];
        for (int i = 1; i < argc; i++) {
                bool missing = false;
                const char *v;

                if (rest) {
                        cargv[cargc++] = argv[i];
                        continue;
                }
                if (!strcmp(argv[i], "--")) {
                        rest = true;
                        cargv[cargc++] = argv[i];
                        continue;
                }
                if ((v = take_value(argv, argc, &i, "--config", &missing)))
                        g->config_path = v;
                else if ((v = take_value(argv, argc, &i, "--api-url", &missing)))
                        g->api_url = v;
                else if ((v = take_value(argv, argc, &i, "--token", &missing)))
                        g->token = v;
                else if ((cargc == 1 || strcmp(cargv[1], "drive")) &&
                         (v = take_value(argv, argc, &i, "--timeout", &missing)))
                        g->timeout = v; /* drive's own --timeout is the run's */
                else if ((v = take_value(argv, argc, &i, "--log-level", &missing)))
                        g->log_level = v;
                else if ((v = take_value(argv, argc, &i, "--set", &missing))) {
                        if (g->set_cnt == (int) (sizeof(g->sets) / sizeof(g->sets[0]))) {
                                fprintf(stderr, "agentfleet: too many --set options\n");
                                return -1;
                        }
                        g->sets[g->set_cnt++] = v;
                } else if (!strcmp(argv[i], "--json"))
                        g->json = true;
                else if (!strcmp(argv[i], "--version"))
                        g->version = true;
                else if (cargc == 1 && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")))
                        g->help = true; /* before the command: global help */
                else
                        cargv[cargc++] = argv[i];
                if (missing) {
                        fprintf(stderr, "agentfleet: %s needs a value\n", argv[i]);
                        return -1;
                }
        }
        cargv[cargc] = NULL;
        *cargcp = cargc;
        return 0;
}

/* Load settings: file, environment, then --set. @returns 0 or -1 (message printed). */
static int load_config(af_cli_t *cli, const globals_t *g) {
        char errstr[512];
        const char *path = g->config_path ? g->config_path : getenv("AGENTFLEET_CONFIG");

        if (path && !*path)
                path = NULL;
        cli->conf = af_config_new();
        if (!cli->conf) {
                fprintf(stderr, "agentfleet: out of memory\n");
                return -1;
        }
        if (af_config_load(cli->conf, path, errstr, sizeof(errstr)) != AF_OK) {
                fprintf(stderr, "agentfleet: %s\n", errstr);
                return -1;
        }
        for (int i = 0; i < g->set_cnt; i++) {
                if (af_config_set_arg(cli->conf, g->sets[i], errstr, sizeof(errstr)) != AF_OK) {
                        fprintf(stderr, "agentfleet: %s\n", errstr);
                        return -1;
                }
        }
        return 0;
}

/* Resolve API URL and token: flag, then environment, then settings. @returns 0 or -1. */
static int resolve_endpoint(af_cli_t *cli, const globals_t *g) {
        const char *url, *token;
        size_t n;

        if (g->api_url) {
                char errstr[256];
                if (af_config_set(cli->conf, "cli.api_url", g->api_url, errstr, sizeof(errstr)) !=
                    AF_OK) {
                        fprintf(stderr, "agentfleet: --api-url: %s\n", errstr);
                        return -1;
                }
        }
        url = af_config_str(cli->conf, "cli.api_url");
        cli->api_url = url ? url : "http://127.0.0.1:8080";
        /* A trailing slash would make "//v1/tasks"; trim it in the config's own copy. */
        n = strlen(cli->api_url);
        while (n > 0 && cli->api_url[n - 1] == '/') {
                char errstr[256], *trimmed = strndup(cli->api_url, n - 1);
                if (!trimmed)
                        return -1;
                af_config_set(cli->conf, "cli.api_url", trimmed, errstr, sizeof(errstr));
                free(trimmed);
                cli->api_url = af_config_str(cli->conf, "cli.api_url");
                n = strlen(cli->api_url);
        }

        token = g->token;
        if (!token || !*token)
                token = getenv("AGENTFLEET_TOKEN");
        if (!token || !*token)
                token = af_config_str(cli->conf, "cli.token");
        if (token && *token) {
                cli->token = strdup(token);
                if (!cli->token)
                        return -1;
                af_log_redact_add(cli->token);
        }
        if (g->timeout) {
                cli->timeout_ms = af_cli_parse_duration_ms(g->timeout);
                if (cli->timeout_ms <= 0) {
                        fprintf(stderr,
                                "agentfleet: --timeout: expected a duration like 30s, "
                                "got \"%s\"\n",
                                g->timeout);
                        return -1;
                }
        }
        return 0;
}

int main(int argc, char **argv) {
        globals_t g = {0};
        af_cli_t cli = {.timeout_ms = 30000};
        char errstr[512];
        char **cargv = NULL;
        int cargc = 0, rc = AF_CLI_EXIT_USAGE;
        af_cli_cmd_fn_t *fn = NULL;

        cargv = calloc((size_t) argc + 1, sizeof(*cargv));
        if (!cargv) {
                rc = AF_CLI_EXIT_SERVER;
                goto out;
        }
        if (split_globals(argc, argv, &g, &cargc, cargv) < 0)
                goto out;
        af_log_init("cli", AF_LOG_WARN);
        if (g.log_level) {
                int lvl = af_log_level_parse(g.log_level);
                if (lvl < 0) {
                        fprintf(stderr, "agentfleet: --log-level: unknown level \"%s\"\n",
                                g.log_level);
                        goto out;
                }
                af_log_init("cli", (af_log_level_t) lvl);
        }
        if (g.version) {
                printf("agentfleet %s\n", AF_CLI_VERSION);
                rc = AF_CLI_EXIT_OK;
                goto out;
        }
        if (g.help) {
                usage(stdout);
                rc = AF_CLI_EXIT_OK;
                goto out;
        }
        if (cargc < 2) {
                usage(stderr);
                goto out;
        }
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (!strcmp(cargv[1], commands[i].name))
                        fn = commands[i].fn;
        if (!fn) {
                fprintf(stderr, "agentfleet: unknown command \"%s\" (try --help)\n", cargv[1]);
                goto out;
        }
        cli.json = g.json;
        if (load_config(&cli, &g) < 0 || resolve_endpoint(&cli, &g) < 0)
                goto out;
        cli.loop = af_loop_new(errstr, sizeof(errstr));
        if (!cli.loop) {
                fprintf(stderr, "agentfleet: %s\n", errstr);
                rc = AF_CLI_EXIT_SERVER;
                goto out;
        }
        /* The command sees argv[0] = its name, like a program of its own. */
        rc = fn(&cli, cargc - 1, cargv + 1);
out:
        af_http_client_destroy(cli.hc);
        af_loop_destroy(cli.loop);
        af_config_destroy(cli.conf);
        free(cli.token);
        free(cargv);
        fflush(stdout);
        return rc;
}
