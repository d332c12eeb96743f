/*
 * rules: the claims rule check of simagent (see rules.h). A real insurer's rule engine checks
 * far more; these few rules are enough to make some sample claims fail, so that the triage
 * agent has a "deny" path to take and the demo shows all three decisions.
 */
#include "rules.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Currencies the simulated insurer pays out in. */
static const char *const rules_currencies[] = {
        "EUR", "USD", "GBP", "CHF", "CAD", "AUD", "JPY", "SEK", "NOK", "DKK", "PLN", NULL,
};

/* Field names a service date may come under (sample data of several origins). */
static const char *const rules_date_fields[] = {
        "service_date", "date_of_service", "treatment_date", "date", NULL,
};

json_t *af_sim_rules_claim(json_t *doc) {
        json_t *inner;

        if (!json_is_object(doc))
                return NULL;
        inner = json_object_get(doc, "claim");
        return json_is_object(inner) ? inner : doc;
}

static void rules_violation(json_t *violations, const char *rule, const char *message) {
        json_array_append_new(violations,
                              json_pack("{s:s, s:s}", "rule", rule, "message", message));
}

/* An ICD-10-like code: a letter, a digit, an alphanumeric, optionally '.' and 1-4 more. */
static bool rules_icd10_ok(const char *s) {
        size_t n = strlen(s);

        if (n < 3 || n > 8 || !isupper((unsigned char) s[0]) || !isdigit((unsigned char) s[1]) ||
            !isalnum((unsigned char) s[2]))
                return false;
        if (n == 3)
                return true;
        if (s[3] != '.' || n == 4)
                return false;
        for (size_t i = 4; i < n; i++)
                if (!isalnum((unsigned char) s[i]))
                        return false;
        return true;
}

/* Parse the "YYYY-MM-DD" prefix of s (an ISO date or date-time) into *ymd as YYYYMMDD.
 * @returns false when it is not a real calendar date. */
static bool rules_parse_date(const char *s, int *ymd) {
        static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        int v[3] = {0, 0, 0};
        int y, m, d;
        bool leap;

        if (strlen(s) < 10 || s[4] != '-' || s[7] != '-')
                return false;
        if (s[10] != '\0' && s[10] != 'T' && s[10] != ' ')
                return false;
        for (int i = 0, part = 0; i < 10; i++) {
                if (i == 4 || i == 7) {
                        part++;
                        continue;
                }
                if (!isdigit((unsigned char) s[i]))
                        return false;
                v[part] = v[part] * 10 + (s[i] - '0');
        }
        y = v[0];
        m = v[1];
        d = v[2];
        leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        if (y < 1900 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1] ||
            (m == 2 && d == 29 && !leap))
                return false;
        *ymd = y * 10000 + m * 100 + d;
        return true;
}

static void rules_check_amount(const json_t *claim, json_t *violations) {
        json_t *amount = json_object_get(claim, "amount");

        if (!amount)
                rules_violation(violations, "amount_present", "amount is missing");
        else if (!json_is_number(amount))
                rules_violation(violations, "amount_positive", "amount must be a number");
        else if (!(json_number_value(amount) > 0))
                rules_violation(violations, "amount_positive", "amount must be positive");
}

static void rules_check_currency(const json_t *claim, json_t *violations) {
        const char *cur = json_string_value(json_object_get(claim, "currency"));
        char msg[96];

        if (!cur) {
                rules_violation(violations, "currency_known", "currency is missing");
                return;
        }
        for (int i = 0; rules_currencies[i]; i++)
                if (strcmp(cur, rules_currencies[i]) == 0)
                        return;
        snprintf(msg, sizeof(msg), "currency \"%.16s\" is not one we pay out in", cur);
        rules_violation(violations, "currency_known", msg);
}

static void rules_check_diagnoses(const json_t *claim, json_t *violations) {
        json_t *codes = json_object_get(claim, "diagnosis_codes");
        size_t i;
        json_t *code;
        char msg[96];

        if (!json_is_array(codes) || json_array_size(codes) == 0) {
                rules_violation(violations, "diagnosis_codes_present",
                                "at least one diagnosis code is required");
                return;
        }
        json_array_foreach(codes, i, code) {
                const char *s = json_string_value(code);
                if (!s || !rules_icd10_ok(s)) {
                        snprintf(msg, sizeof(msg), "diagnosis_codes[%zu] is not an ICD-10 code", i);
                        rules_violation(violations, "diagnosis_code_format", msg);
                        return;
                }
        }
}

static void rules_check_date(const json_t *claim, int64_t now_ms, json_t *violations) {
        const char *date = NULL;
        const char *field = NULL;
        time_t now_s = (time_t) (now_ms / 1000);
        struct tm tm;
        int ymd, today;
        char msg[128];

        for (int i = 0; rules_date_fields[i] && !date; i++) {
                date = json_string_value(json_object_get(claim, rules_date_fields[i]));
                field = rules_date_fields[i];
        }
        if (!date) {
                rules_violation(violations, "service_date_present", "service_date is missing");
                return;
        }
        if (!rules_parse_date(date, &ymd)) {
                snprintf(msg, sizeof(msg), "%s is not a date (YYYY-MM-DD)", field);
                rules_violation(violations, "service_date_valid", msg);
                return;
        }
        gmtime_r(&now_s, &tm);
        today = (tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
        if (ymd > today) {
                snprintf(msg, sizeof(msg), "%s %.10s is in the future", field, date);
                rules_violation(violations, "service_date_not_future", msg);
        }
}

json_t *af_sim_rules_check(const json_t *claim, int64_t now_ms) {
        json_t *violations = json_array();
        json_t *out = NULL;
        json_t *id;

        if (!violations)
                goto out;
        if (!json_is_object(claim)) {
                rules_violation(violations, "claim_object", "the claim must be a JSON object");
                id = NULL;
        } else {
                id = json_object_get(claim, "claim_id");
                if (!json_is_string(id) || json_string_length(id) == 0)
                        rules_violation(violations, "claim_id_present", "claim_id is missing");
                rules_check_amount(claim, violations);
                rules_check_currency(claim, violations);
                rules_check_diagnoses(claim, violations);
                rules_check_date(claim, now_ms, violations);
        }
        out = json_pack("{s:b, s:O?, s:O}", "passed", json_array_size(violations) == 0, "claim_id",
                        json_is_string(id) ? id : NULL, "violations", violations);
out:
        json_decref(violations);
        return out;
}
