/*
 * test_jsonsuite.c - runs st_json_validate over JSONTestSuite's test_parsing
 * directory (argv[1]): every y_ file must be accepted, every n_ file
 * rejected, and every i_ file must get the decision documented below (and
 * in docs/json-conformance.md; `--markdown` prints that table).
 */
#define _POSIX_C_SOURCE 200809L
#include "harness.h"

#include <dirent.h>

typedef struct choice {
    const char *file;
    bool accept;
    const char *why;
} choice;

#define NUM_WHY                                                                                    \
    "numbers are checked against the JSON grammar only; value range is checked where a value is used (shape/offsets must fit u64)"
#define SUR_WHY                                                                                    \
    "lone or unpaired UTF-16 surrogate in a \\u escape is not a Unicode scalar value (serde_json rejects it too)"
#define UTF_WHY                                                                                    \
    "invalid UTF-8 (RFC 8259 requires UTF-8; overlongs, surrogates, > U+10FFFF, truncated or stray bytes rejected)"

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
    {"i_structure_500_nested_arrays.json", false,
     "nesting deeper than 127 levels (serde_json's recursion limit)"},
    {"i_structure_UTF-8_BOM_empty_object.json", false,
     "a UTF-8 BOM is not JSON whitespace (upstream rejects a BOM before the header too)"},
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
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

    int y = 0, n = 0, i_acc = 0, i_rej = 0;
    size_t i_seen = 0;
    if (markdown)
        printf("| file | decision | why |\n| --- | --- | --- |\n");
    for (size_t k = 0; k < count; k++) {
        char path[4096];
        size_t len = 0;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        uint8_t *buf = harness_read_file(path, &len);
        CHECK(buf != NULL, "%s: cannot read it", path);
        if (buf == NULL)
            continue;
        st_error err;
        memset(&err, 0, sizeof err);
        st_code rc = st_json_validate(buf, len, &err);
        bool ok = rc == ST_OK;
        /* the message without "invalid JSON in header: " */
        const char *why = ok ? "" : err.msg + strlen(st_code_text(err.code));
        CHECK(ok || rc == ST_ERR_INVALID_JSON, "%s: unexpected code %d (%s)", names[k], rc,
              err.msg);
        CHECK(ok || strstr(err.msg, " at line ") != NULL, "%s: message without position: %s",
              names[k], err.msg);
        if (names[k][0] == 'y') {
            y++;
            CHECK(ok, "%s: rejected valid JSON: %s", names[k], err.msg);
        } else if (names[k][0] == 'n') {
            n++;
            CHECK(!ok, "%s: accepted invalid JSON", names[k]);
        } else if (names[k][0] == 'i') {
            const choice *c = NULL;
            i_seen++;
            ok ? i_acc++ : i_rej++;
            for (size_t m = 0; m < sizeof choices / sizeof choices[0]; m++)
                if (strcmp(choices[m].file, names[k]) == 0)
                    c = &choices[m];
            CHECK(c != NULL, "%s: no documented decision (got %s %s)", names[k],
                  ok ? "accepted" : "rejected", why);
            CHECK(c == NULL || c->accept == ok, "%s: documented %s, got %s (%s)", names[k],
                  c && c->accept ? "accepted" : "rejected", ok ? "accepted" : "rejected", why);
            if (markdown && c != NULL && c->accept == ok)
                printf("| `%s` | %s | %s%s%s |\n", names[k], ok ? "accepted" : "rejected", c->why,
                       ok ? "" : "; error: ", why);
            if (!markdown)
                printf("i: %-55s %s%s%s\n", names[k], ok ? "accepted" : "rejected", ok ? "" : "  ",
                       why);
        }
        free(buf);
    }
    for (size_t k = 0; k < count; k++)
        free(names[k]);
    free(names);
    CHECK(i_seen == sizeof choices / sizeof choices[0], "%zu i_ files seen, %zu documented", i_seen,
          sizeof choices / sizeof choices[0]);
    CHECK(y > 0 && n > 0, "no y_/n_ files found in %s", dir);
    fprintf(markdown ? stderr : stdout,
            "jsonsuite: %d y (all must pass), %d n (all must fail), i: %d accepted, %d rejected\n",
            y, n, i_acc, i_rej);
    return harness_finish("test_jsonsuite");
}
