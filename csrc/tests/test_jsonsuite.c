/*
 * test_jsonsuite.c - runs st_json_validate over JSONTestSuite's test_parsing
 * directory (argv[1]): every y_ file must be accepted, every n_ file
 * rejected, and every i_ file must get the decision documented below (and
 * in docs/json-conformance.md; `--markdown` prints that table).
 */
#define _POSIX_C_SOURCE 200809L
#include "../core/st_core.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct choice {
    const char *file;
    bool accept;
    const char *why;
} choice;

#define NUM_WHY "numbers are checked against the JSON grammar only; value range is checked where a value is used (shape/offsets must fit u64)"
#define SUR_WHY "lone or unpaired UTF-16 surrogate in a \\u escape is not a Unicode scalar value (serde_json rejects it too)"
#define UTF_WHY "invalid UTF-8 (RFC 8259 requires UTF-8; overlongs, surrogates, > U+10FFFF, truncated or stray bytes rejected)"

static const choice choices[] = {
    {"i_number_double_huge_neg_exp.json", true, NUM_WHY},
    {"i_number_huge_exp.json", true, NUM_WHY},
    {"i_number_neg_int_huge_exp.json", true, NUM_WHY},
    {"i_number_pos_double_huge_exp.json", true, NUM_WHY},
    {"i_number_real_neg_overflow.json", true, NUM_WHY},
    {"i_number_real_pos_overflow.json", true, NUM_WHY},
    {"i_number_real_underflow.json", true, NUM_WHY},
    {"i_number_too_big_neg_int.json", true, NUM_WHY},
    {"i_number_too_big_pos_int.json", true, NUM_WHY},
    {"i_number_very_big_negative_int.json", true, NUM_WHY},
    {"i_object_key_lone_2nd_surrogate.json", false, SUR_WHY},
    {"i_string_1st_surrogate_but_2nd_missing.json", false, SUR_WHY},
    {"i_string_1st_valid_surrogate_2nd_invalid.json", false, SUR_WHY},
    {"i_string_UTF-16LE_with_BOM.json", false, "not UTF-8 (UTF-16 with BOM)"},
    {"i_string_UTF-8_invalid_sequence.json", false, UTF_WHY},
    {"i_string_UTF8_surrogate_U+D800.json", false, UTF_WHY},
    {"i_string_incomplete_surrogate_and_escape_valid.json", false, SUR_WHY},
    {"i_string_incomplete_surrogate_pair.json", false, SUR_WHY},
    {"i_string_incomplete_surrogates_escape_valid.json", false, SUR_WHY},
    {"i_string_invalid_lonely_surrogate.json", false, SUR_WHY},
    {"i_string_invalid_surrogate.json", false, SUR_WHY},
    {"i_string_invalid_utf-8.json", false, UTF_WHY},
    {"i_string_inverted_surrogates_U+1D11E.json", false, SUR_WHY},
    {"i_string_iso_latin_1.json", false, UTF_WHY},
    {"i_string_lone_second_surrogate.json", false, SUR_WHY},
    {"i_string_lone_utf8_continuation_byte.json", false, UTF_WHY},
    {"i_string_not_in_unicode_range.json", false, UTF_WHY},
    {"i_string_overlong_sequence_2_bytes.json", false, UTF_WHY},
    {"i_string_overlong_sequence_6_bytes.json", false, UTF_WHY},
    {"i_string_overlong_sequence_6_bytes_null.json", false, UTF_WHY},
    {"i_string_truncated-utf-8.json", false, UTF_WHY},
    {"i_string_utf16BE_no_BOM.json", false, "not UTF-8 (UTF-16BE)"},
    {"i_string_utf16LE_no_BOM.json", false, "not UTF-8 (UTF-16LE)"},
    {"i_structure_500_nested_arrays.json", false, "nesting deeper than 127 levels (serde_json's recursion limit)"},
    {"i_structure_UTF-8_BOM_empty_object.json", false, "a UTF-8 BOM is not JSON whitespace (upstream rejects a BOM before the header too)"},
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    bool markdown = false;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--markdown") == 0)
            markdown = true;
        else
            dir = argv[i];
    }
    if (dir == NULL) {
        fprintf(stderr, "usage: %s [--markdown] JSONTestSuite/test_parsing\n", argv[0]);
        return 2;
    }
    DIR *d = opendir(dir);
    if (d == NULL) {
        perror(dir);
        return 2;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0)
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 256;
            names = realloc(names, cap * sizeof *names);
        }
        names[count++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, count, sizeof *names, cmp_str);

    int failures = 0, y = 0, n = 0, i_acc = 0, i_rej = 0;
    size_t i_seen = 0;
    if (markdown)
        printf("| file | decision | why |\n| --- | --- | --- |\n");
    for (size_t k = 0; k < count; k++) {
        char path[4096];
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        unsigned char *buf = read_all(path, &len);
        if (buf == NULL) {
            perror(path);
            failures++;
            continue;
        }
        st_error err;
        memset(&err, 0, sizeof err);
        st_code rc = st_json_validate(buf, len, &err);
        bool ok = rc == ST_OK;
        if (!ok && rc != ST_ERR_INVALID_JSON) {
            fprintf(stderr, "FAIL %s: unexpected code %d (%s)\n", names[k], rc, err.msg);
            failures++;
        }
        if (!ok && strstr(err.msg, " at line ") == NULL) {
            fprintf(stderr, "FAIL %s: message without position: %s\n", names[k], err.msg);
            failures++;
        }
        if (names[k][0] == 'y') {
            y++;
            if (!ok) {
                fprintf(stderr, "FAIL %s: rejected valid JSON: %s\n", names[k], err.msg);
                failures++;
            }
        } else if (names[k][0] == 'n') {
            n++;
            if (ok) {
                fprintf(stderr, "FAIL %s: accepted invalid JSON\n", names[k]);
                failures++;
            }
        } else if (names[k][0] == 'i') {
            const choice *c = NULL;
            i_seen++;
            ok ? i_acc++ : i_rej++;
            for (size_t m = 0; m < sizeof choices / sizeof choices[0]; m++)
                if (strcmp(choices[m].file, names[k]) == 0)
                    c = &choices[m];
            if (c == NULL) {
                fprintf(stderr, "FAIL %s: no documented decision (got %s: %s)\n", names[k],
                        ok ? "accepted" : "rejected", ok ? "" : err.msg);
                failures++;
            } else if (c->accept != ok) {
                fprintf(stderr, "FAIL %s: documented %s, got %s (%s)\n", names[k],
                        c->accept ? "accepted" : "rejected", ok ? "accepted" : "rejected", err.msg);
                failures++;
            } else if (markdown) {
                printf("| `%s` | %s | %s%s%s |\n", names[k], ok ? "accepted" : "rejected", c->why,
                       ok ? "" : "; error: ", ok ? "" : err.msg);
            }
            if (!markdown)
                printf("i: %-55s %s%s%s\n", names[k], ok ? "accepted" : "rejected",
                       ok ? "" : "  ", ok ? "" : err.msg);
        }
        free(buf);
    }
    for (size_t k = 0; k < count; k++)
        free(names[k]);
    free(names);
    if (i_seen != sizeof choices / sizeof choices[0]) {
        fprintf(stderr, "FAIL: %zu i_ files seen, %zu documented\n", i_seen,
                sizeof choices / sizeof choices[0]);
        failures++;
    }
    if (y == 0 || n == 0) {
        fprintf(stderr, "FAIL: no y_/n_ files found in %s\n", dir);
        failures++;
    }
    fprintf(markdown ? stderr : stdout,
            "jsonsuite: %d y (all must pass), %d n (all must fail), i: %d accepted, %d rejected; %d failures\n",
            y, n, i_acc, i_rej, failures);
    return failures ? 1 : 0;
}
