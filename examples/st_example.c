/*
 * st_example.c - using libsafetensors-c from C.
 *
 *   st_example list FILE           one line per tensor: name dtype [shape] begin end
 *   st_example read FILE NAME      the tensor's size and first values
 *   st_example write FILE          writes a small file tensor by tensor
 *
 * Build against the installed library (make install PREFIX=...):
 *   cc st_example.c $(pkg-config --cflags --libs safetensors-c) -o st_example
 * With a prefix outside the loader's path add -Wl,-rpath,PREFIX/lib (or set
 * LD_LIBRARY_PATH); for a self-contained binary link PREFIX/lib/libsafetensors-c.a
 * -pthread -lm instead of -lsafetensors-c.
 */
#include <st_core.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const st_error *err)
{
    fprintf(stderr, "%s: %s (%s, offset %" PRIu64 ")\n", what, err->msg, st_code_name(err->code),
            err->offset);
    return 1;
}

static void print_shape(const st_tensor *t)
{
    printf("[");
    for (size_t d = 0; d < t->ndim; d++)
        printf(d ? ", %" PRIu64 : "%" PRIu64, t->shape[d]);
    printf("]");
}

static int list(const char *path)
{
    st_error err;
    st_file *file;
    if (st_file_open(path, ST_BACKEND_MMAP, &file, &err) != ST_OK)
        return fail(path, &err);
    const st_header *header = st_file_header(file); /* owned by file */
    for (size_t i = 0; i < st_header_count(header); i++) {
        const st_tensor *t = st_header_tensor(header, i); /* file order */
        printf("%.*s %s ", (int)t->name_len, t->name, st_dtype_name(t->dtype));
        print_shape(t);
        printf(" %" PRIu64 " %" PRIu64 "\n", t->begin, t->end);
    }
    for (size_t i = 0; i < st_header_metadata_count(header); i++) {
        const st_metadata_item *m = st_header_metadata_item(header, i);
        printf("metadata %.*s=%.*s\n", (int)m->key_len, m->key, (int)m->value_len, m->value);
    }
    st_file_release(file); /* the last reference: unmaps and closes */
    return 0;
}

static int read_tensor(const char *path, const char *name)
{
    st_error err;
    st_file *file;
    int rc = 1;
    uint8_t *data = NULL;
    if (st_file_open(path, ST_BACKEND_PREAD, &file, &err) != ST_OK)
        return fail(path, &err);
    const st_tensor *t = st_header_find(st_file_header(file), name, strlen(name));
    if (t == NULL) {
        fprintf(stderr, "%s: no tensor named %s\n", path, name);
        goto exit;
    }
    size_t nbytes = (size_t)(t->end - t->begin);
    data = malloc(nbytes ? nbytes : 1);
    if (data == NULL)
        goto exit;
    /* offsets in the header are relative to the data section */
    if (st_file_read(file, st_header_data_start(st_file_header(file)) + t->begin, data, nbytes,
                     &err) != ST_OK) {
        fail(path, &err);
        goto exit;
    }
    printf("%s %s ", name, st_dtype_name(t->dtype));
    print_shape(t);
    printf(" %zu bytes:", nbytes);
    for (size_t i = 0; i < 8; i++) {
        if (t->dtype == ST_F32 && (i + 1) * 4 <= nbytes) {
            float v;
            memcpy(&v, data + 4 * i, 4); /* the file is little-endian, as this host */
            printf(" %g", v);
        } else if (t->dtype == ST_I64 && (i + 1) * 8 <= nbytes) {
            int64_t v;
            memcpy(&v, data + 8 * i, 8);
            printf(" %" PRId64, v);
        } else if (t->dtype != ST_F32 && t->dtype != ST_I64 && i < nbytes) {
            printf(" %02x", data[i]);
        }
    }
    printf("\n");
    rc = 0;
exit:
    free(data);
    st_file_release(file);
    return rc;
}

/* Writes {"ids": I64 [3], "weight": F32 [2, 2]} with metadata format=example,
 * declaring both first and writing them one at a time. */
static int write_file(const char *path)
{
    static const uint64_t ids_shape[1] = {3}, weight_shape[2] = {2, 2};
    static const int64_t ids[3] = {7, 8, 9};
    static const float weight[4] = {0.5f, 1.5f, -2.0f, 4.0f};
    const st_write_tensor decl[2] = {
        {"weight", 6, ST_F32, 2, weight_shape, NULL, 0}, /* data is given to st_stream_write */
        {"ids", 3, ST_I64, 1, ids_shape, NULL, 0},
    };
    const st_metadata_item metadata[1] = {{"format", 6, "example", 7}};
    st_error err;
    st_stream *stream;
    if (st_stream_open(path, decl, 2, metadata, 1, true, &stream, &err) != ST_OK)
        return fail(path, &err);
    /* any order; here the second declared tensor first */
    if (st_stream_write(stream, 1, ids, sizeof ids, &err) != ST_OK ||
        st_stream_write(stream, 0, weight, sizeof weight, &err) != ST_OK ||
        st_stream_commit(stream, &err) != ST_OK) {
        st_stream_free(stream); /* removes the temporary file */
        return fail(path, &err);
    }
    st_stream_free(stream);
    printf("wrote %s\n", path);
    return 0;
}

int main(int argc, char **argv)
{
    if (st_api_version() / 1000 != ST_API_VERSION_MAJOR) {
        fprintf(stderr, "library API %d, compiled against %d\n", st_api_version(), ST_API_VERSION);
        return 1;
    }
    if (argc == 3 && strcmp(argv[1], "list") == 0)
        return list(argv[2]);
    if (argc == 4 && strcmp(argv[1], "read") == 0)
        return read_tensor(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "write") == 0)
        return write_file(argv[2]);
    fprintf(stderr, "usage: %s list FILE | read FILE NAME | write FILE\n", argv[0]);
    return 2;
}
