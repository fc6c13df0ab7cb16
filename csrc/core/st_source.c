/*
 * st_source.c - the header of a file whose bytes come from a byte source
 * (st_source: a remote object, memory, ...) rather than a path. Two reads
 * through the source, the 8-byte length prefix then the header, checked by
 * st_header_length and st_header_parse: the rules and messages of a local
 * file. The rest of a source file (reads, lifetime) is st_file.c's.
 */
#include "st_source.h"

/* One read of len bytes at offset through the source. */
static st_code source_read(const st_source *source, uint64_t offset, void *dst, size_t len,
                           st_error *err)
{
    st_read_request request = {.offset = offset, .dst = dst, .len = len};
    return len == 0 ? ST_OK : source->read_many(source->ctx, &request, 1, err);
}

st_code st_source_load_header(const st_source *source, st_header **header, st_error *err)
{
    uint8_t prefix[8], *json = NULL;
    size_t prefix_len = source->size < 8 ? (size_t)source->size : 8;
    uint64_t n = 0;
    st_code rc;
    *header = NULL;
    if ((rc = source_read(source, 0, prefix, prefix_len, err)) != ST_OK ||
        (rc = st_header_length(prefix, prefix_len, source->size, &n, err)) != ST_OK)
        return rc;
    /* st_header_length guarantees 8 + n <= size and n <= ST_MAX_HEADER_SIZE. */
    if ((json = st_malloc(n > 0 ? (size_t)n : 1)) == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    if ((rc = source_read(source, 8, json, (size_t)n, err)) == ST_OK)
        rc = st_header_parse(json, (size_t)n, source->size, header, err);
    st_free(json);
    return rc;
}
