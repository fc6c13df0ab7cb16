/*
 * foreign_files.c - naming what a file that is not safetensors looks like,
 * so that "Error while deserializing header: header too large" also says
 * "this looks like a zip archive (a torch.save checkpoint)". Only formats
 * people commonly hand to safe_open by mistake are recognised, each by a
 * signature that no safetensors file can start with (its first 8 bytes are
 * a little-endian header length below 100,000,000, followed by '{').
 */
#include "module.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Bytes after leading ASCII whitespace start with `prefix`, ignoring case. */
static bool starts_with_text(const uint8_t *head, size_t len, const char *prefix)
{
    size_t i = 0, n = strlen(prefix);
    while (i < len && isspace(head[i]))
        i++;
    return len - i >= n && strncasecmp((const char *)head + i, prefix, n) == 0;
}

static const char *foreign_format(const uint8_t *head, size_t len)
{
    if (len >= 4 && memcmp(head, "PK\x03\x04", 4) == 0)
        return "a zip archive, as torch.save writes: load it with torch.load, "
               "then save it with safetensors.torch.save_file";
    if (len >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5)
        return "a Python pickle, as torch.save's legacy format writes: load it with torch.load, "
               "then save it with safetensors.torch.save_file";
    if (starts_with_text(head, len, "version https://git-lfs"))
        return "a git-lfs pointer, not the file it stands for: run `git lfs pull`";
    if (starts_with_text(head, len, "<!doctype html") || starts_with_text(head, len, "<html"))
        return "an HTML page: a download that returned a web page instead of the file?";
    return NULL;
}

void stpy_note_foreign_format(st_error *err, const uint8_t *head, size_t len)
{
    const char *format = foreign_format(head, len);
    size_t used = strlen(err->msg);
    if (format != NULL)
        snprintf(err->msg + used, sizeof(err->msg) - used, " (the file looks like %s)", format);
}

void stpy_note_foreign_file(st_error *err, const char *path)
{
    uint8_t head[64];
    ssize_t got;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return;
    got = pread(fd, head, sizeof(head), 0);
    close(fd);
    if (got > 0)
        stpy_note_foreign_format(err, head, (size_t)got);
}
