/*
 * st_core.h - the public API of the safetensors C core (C11, no Python.h): read, validate,
 * map, slice and write safetensors files as upstream 0.8.0 does (docs/format.md). Errors,
 * ownership and threads: docs/c-api.md.
 */
#ifndef ST_CORE_H
#define ST_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(ST_BUILDING_LIBRARY) && defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* MARK: errors */

/* Texts: st_code_text (st_error.c); which check gives which: docs/format.md §7. */
typedef enum st_code {
    ST_OK = 0,
    ST_ERR_HEADER_TOO_SMALL,      /* file shorter than the 8-byte length */
    ST_ERR_HEADER_TOO_LARGE,      /* header length over ST_MAX_HEADER_SIZE */
    ST_ERR_INVALID_HEADER_LENGTH, /* header runs past the end of the file */
    ST_ERR_INVALID_UTF8,          /* header is not UTF-8 */
    ST_ERR_INVALID_JSON,          /* JSON syntax or schema error, "at line L column C" */
    ST_ERR_INVALID_OFFSET,        /* data_offsets leave a hole, overlap or run backwards */
    ST_ERR_VALIDATION_OVERFLOW,   /* shape x bits overflows 64 bits */
    ST_ERR_MISALIGNED_SLICE,      /* sub-byte data (F4, F6) not on whole bytes */
    ST_ERR_TENSOR_INVALID_INFO,   /* data_offsets length != shape x dtype size */
    ST_ERR_METADATA_INCOMPLETE,   /* data section longer or shorter than the tensors */
    ST_ERR_IO,                    /* system call failed; sys_errno set */
    ST_ERR_NOMEM,                 /* allocation failed */
    ST_ERR_INVALID_SLICE,         /* index/slice errors; see st_select */
    ST_ERR_INVALID_ARGUMENT,      /* caller errors (bad dtype, bad lengths, ...) */
    ST_ERR_EXTERNAL,              /* a byte source (st_source) failed and reported its error
                                   * its own way (a Python exception): msg is only a summary */
    ST_ERR__COUNT
} st_code;

/* Longest message, NUL included (names in messages are truncated to fit). */
#define ST_ERROR_MSG_MAX 512

typedef struct st_error {
    st_code code;
    int sys_errno;   /* errno for ST_ERR_IO, else 0 */
    uint64_t offset; /* byte offset in the file, 0 if none */
    char msg[ST_ERROR_MSG_MAX];
} st_error;

/* Sets *err (message: st_code_text(code), then the printf-style details); returns code. */
st_code st_error_set(st_error *err, st_code code, uint64_t offset, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Sets *err to a code whose text is the whole message ("out of memory"); returns code. */
st_code st_error_code(st_error *err, st_code code, uint64_t offset);
/* Rust's Debug form of a UTF-8 string ("a\"b\n", controls as \u{1b}, at most 160 bytes
 * of s then "..."), as upstream quotes names: at most 7 bytes per byte + 6, NUL-terminated. */
void st_debug_str(const char *s, size_t n, char *out, size_t cap);
/* ST_ERR_IO from an errno value: "I/O error: <strerror> (os error N)". */
st_code st_error_io(st_error *err, int sys_errno, uint64_t offset);
/* Upstream's enum variant of a code ("HeaderTooLarge", ...). */
const char *st_code_name(st_code code);
/* The code's whole message, or how it starts ("I/O error: "), or "" (no fixed part). */
const char *st_code_text(st_code code);

/* MARK: allocation (whatever the core hands out for freeing goes to st_free) */

void *st_malloc(size_t size);
void *st_calloc(size_t count, size_t size);
void *st_realloc(void *ptr, size_t size);
void st_free(void *ptr);

/* MARK: dtypes */

/* In upstream's enum order: the writer sorts by this index, descending. */
typedef enum st_dtype {
    ST_BOOL = 0,
    ST_F4,
    ST_F6_E2M3,
    ST_F6_E3M2,
    ST_U8,
    ST_I8,
    ST_F8_E5M2,
    ST_F8_E4M3,
    ST_F8_E8M0,
    ST_F8_E4M3FNUZ,
    ST_F8_E5M2FNUZ,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_C64,
    ST_F64,
    ST_I64,
    ST_U64,
    ST_DTYPE__COUNT
} st_dtype;

typedef enum st_numpy_source {
    ST_NUMPY_NONE = 0, /* NumPy cannot hold it (F4, F6_*) */
    ST_NUMPY_BUILTIN,  /* numpy.<type_name> */
    ST_NUMPY_ML_DTYPES /* ml_dtypes.<type_name> (bfloat16, float8_*) */
} st_numpy_source;

/* A row of the one dtype table (st_dtype.c; docs/format.md §3): no other layer keeps a copy. */
typedef struct st_dtype_info {
    st_dtype dtype;
    const char *name;      /* header spelling: "F32" */
    unsigned bits;         /* bits per element: 4 (F4), 6 (F6_*), else 8 x bytes */
    const char *type_name; /* torch/NumPy/paddle/TensorSpec name: "float32", "bfloat16",
                            * "float4_e2m1fn_x2"; NULL for F6_* (no framework has them) */
    st_numpy_source numpy; /* where NumPy finds type_name */
    unsigned pack;         /* logical elements per framework item: ST_F4_PER_ITEM for F4, else 1 */
} st_dtype_info;

/* For a dtype out of range: NULL, "?", 0 bits. */
const st_dtype_info *st_dtype_info_get(st_dtype dtype);
const char *st_dtype_name(st_dtype dtype);
unsigned st_dtype_bits(st_dtype dtype);
/* A header token ("F32", case-sensitive) or a type_name ("float32"); false if unknown. */
bool st_dtype_from_name(const char *name, size_t len, st_dtype *out);
bool st_dtype_from_type_name(const char *name, size_t len, st_dtype *out);

/* F4 packing (docs/format.md §3.2): files give the logical shape (two values a byte);
 * frameworks hold pairs (torch.float4_e2m1fn_x2), a last dim ST_F4_PER_ITEM times smaller. */
#define ST_F4_PER_ITEM 2
/* Framework last dim from the logical one (/ info->pack); ST_ERR_INVALID_ARGUMENT if not whole. */
st_code st_dtype_packed_dim(st_dtype dtype, uint64_t logical, uint64_t *packed, st_error *err);
/* Logical last dim from the framework's (* info->pack); ST_ERR_INVALID_ARGUMENT on overflow. */
st_code st_dtype_unpacked_dim(st_dtype dtype, uint64_t packed, uint64_t *logical, st_error *err);

/* MARK: header (parse + validate) */

#define ST_MAX_HEADER_SIZE 100000000u /* decimal, as upstream */
#define ST_JSON_MAX_DEPTH  128

typedef struct st_tensor {
    const char *name; /* decoded UTF-8, NOT NUL-terminated (may contain NUL) */
    size_t name_len;
    st_dtype dtype;
    size_t ndim;
    const uint64_t *shape; /* ndim entries; logical shape from the header */
    uint64_t begin, end;   /* data_offsets, relative to the data section */
} st_tensor;

typedef struct st_metadata_item {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} st_metadata_item;

typedef struct st_header st_header; /* opaque, immutable once built */

/* Rules 1-3 of docs/format.md §6: prefix holds the first min(file_size, 8)
 * bytes of the file. On success *header_len = N (the JSON length). */
st_code st_header_length(const uint8_t *prefix, size_t prefix_len, uint64_t file_size,
                         uint64_t *header_len, st_error *err);

/* Rules 4-8 of docs/format.md §6 on the N header bytes (file offset 8) of a
 * file of file_size bytes. Error offsets are file offsets. On success *out
 * owns a copy of everything it needs; json may be freed. */
st_code st_header_parse(const uint8_t *json, size_t json_len, uint64_t file_size, st_header **out,
                        st_error *err);
void st_header_free(st_header *header);

/* Byte offset of the data section in the file: 8 + N. */
uint64_t st_header_data_start(const st_header *header);
/* Number of tensors (after duplicate names were collapsed: last one wins). */
size_t st_header_count(const st_header *header);
/* i-th tensor in data-offset order (the file's order). */
const st_tensor *st_header_tensor(const st_header *header, size_t i);
/* i-th tensor in name order (bytewise = code point order). */
const st_tensor *st_header_tensor_by_name_order(const st_header *header, size_t i);
/* O(1) lookup by name; NULL if absent. */
const st_tensor *st_header_find(const st_header *header, const char *name, size_t name_len);
/* The offset-order position i (st_header_tensor(header, i) == t) of a tensor of this header. */
size_t st_header_position(const st_header *header, const st_tensor *t);
/* Metadata: has_metadata is false for absent or null "__metadata__". Items
 * are in file order; a repeated key appears twice (later wins, as upstream). */
bool st_header_has_metadata(const st_header *header);
size_t st_header_metadata_count(const st_header *header);
const st_metadata_item *st_header_metadata_item(const st_header *header, size_t i);

/* Byte size of a tensor: product(shape) * bits / 8, checked. */
st_code st_tensor_nbytes(st_dtype dtype, const uint64_t *shape, size_t ndim, uint64_t *nbytes,
                         st_error *err);

/* Strict validation of a whole JSON document (RFC 8259, UTF-8, depth limit, only
 * whitespace after the value) with the header's messages (docs/json-conformance.md). */
st_code st_json_validate(const uint8_t *text, size_t len, st_error *err);

/* MARK: files (mapping and pread backends) */

typedef enum st_backend {
    ST_BACKEND_MMAP = 0,
    ST_BACKEND_PREAD = 1,
    ST_BACKEND_AUTO = 2 /* st_file_open: pread on a network, cluster or FUSE file system (by its
                         * statfs f_type: st_fs_remote_name), else mmap */
} st_backend;

/*
 * An open, validated file, reference counted (atomically; the last release unmaps, closes
 * and frees). The mmap backend maps the whole file MAP_PRIVATE | MAP_NORESERVE. pread reads
 * and private maps borrow a descriptor from a cache of at most 64 unused (a sixteenth of
 * RLIMIT_NOFILE's soft limit if lower); a reopened path must be the file opened (device,
 * inode, size, mtime), else pread reads fail with ST_ERR_IO ("the file changed after it was
 * opened ...") and mmap-backend private maps copy instead.
 */
typedef struct st_file st_file;

st_code st_file_open(const char *path, st_backend backend, st_file **out, st_error *err);
void st_file_retain(st_file *file);
void st_file_release(st_file *file);

const st_header *st_file_header(const st_file *file);
/* MMAP or PREAD (never AUTO), and why: "chosen by the caller", "local file system",
 * "nfs: network file system", "read through a byte source", ... */
st_backend st_file_backend(const st_file *file);
const char *st_file_backend_reason(const st_file *file);
/* The name of a network, cluster or FUSE file system ("nfs", "smb2", "lustre", "fuse", ...) by
 * its statfs f_type, which ST_BACKEND_AUTO reads with pread; NULL for any other type. */
const char *st_fs_remote_name(uint64_t f_type);
uint64_t st_file_size(const st_file *file);
/* ST_OK for the st_mode of a regular file; else EISDIR for a directory, "I/O
 * error: not a regular file (a FIFO)" (sys_errno EINVAL) for anything else. */
st_code st_file_check_regular(unsigned int mode, st_error *err);
/* Base of the mapping (mmap backend), NULL for pread. */
uint8_t *st_file_map(const st_file *file);
/* A copy-on-write mapping of its own over the file bytes [offset, offset + len)
 * (absolute, len > 0, either backend): writes through it show nowhere else,
 * and it outlives the file. What one handed-out tensor owns. */
typedef struct st_private_map {
    void *base; /* page-aligned start, for munmap */
    size_t len;
    uint8_t *data; /* the byte at `offset` */
} st_private_map;
st_code st_file_map_private(const st_file *file, uint64_t offset, uint64_t len, st_private_map *out,
                            st_error *err);
/* Unmaps it (and empties *map). */
void st_private_map_release(st_private_map *map);
/* Gives back the pages wholly inside [addr, addr + len) of a private mapping
 * (MADV_DONTNEED): they read as the file again. */
void st_private_map_discard(uint8_t *addr, size_t len);
/* Reads len bytes at absolute file offset into dst (either backend); short = I/O error. */
st_code st_file_read(const st_file *file, uint64_t offset, void *dst, size_t len, st_error *err);
/* One read of st_file_read_many: len bytes at absolute file offset into dst. */
typedef struct st_read_request {
    uint64_t offset;
    void *dst;
    size_t len;
} st_read_request;
/* Reads every request (disjoint destinations, all checked first), large ones in chunks
 * that a few threads of this call share. On failure err is the first failure seen and
 * the destinations hold unspecified bytes. */
st_code st_file_read_many(const st_file *file, const st_read_request *requests, size_t count,
                          st_error *err);
/* As st_file_read_many, but a mapped file is read with pread too: for reads of pages that
 * are mostly not in memory yet, several reads in flight instead of page faults. */
st_code st_file_pread_many(const st_file *file, const st_read_request *requests, size_t count,
                           st_error *err);
/* What a read hands each chunk to (st_file_read_consumed): consume(ctx, request, at, chunk, len,
 * err) gets requests[request]'s bytes [at, at + len) right after they are read (hot in cache), in
 * order, all on the one thread that reads that request; other requests go to other threads at
 * the same time. A code other than ST_OK stops the read (chunks not yet read are not read, the
 * call returns that code and err once every thread has stopped). */
typedef struct st_read_consumer {
    st_code (*consume)(void *ctx, size_t request, size_t at, const uint8_t *chunk, size_t len,
                       st_error *err);
    void *ctx;
} st_read_consumer;
/* st_file_pread_many (pread) or st_file_read_many, each request read by one thread, chunk by
 * chunk, and each chunk consumed as soon as it is read. A byte source reads every request first
 * (its own concurrency) and then the chunks are consumed, several requests at a time. */
st_code st_file_read_consumed(const st_file *file, const st_read_request *requests, size_t count,
                              bool pread, const st_read_consumer *consumer, st_error *err);

/* The fraction (0 to 1) of the pages of the file bytes [offset, offset + len) in the page cache
 * now: mincore over the mapping (mmap backend; ST_ERR_INVALID_ARGUMENT on the other) of every
 * page of a range of at most 32 pages, else of 8 evenly spaced windows of 4 pages (first and
 * last included; some microseconds). Linux counts every page as there where the process could
 * not open the file for writing. */
st_code st_file_resident(const st_file *file, uint64_t offset, uint64_t len, double *fraction,
                         st_error *err);
/* Whether a read of all len bytes of a mapped file, the fraction `resident` of them in the page
 * cache, should be st_file_pread_many into memory of its own rather than page faults: when
 * under ST_COLD_FRACTION are cached (several large reads in flight beat faulting the rest in)
 * and len is at most half of `memory` bytes (the copy is held whole; mapped pages can be
 * dropped). */
#define ST_COLD_FRACTION 0.5
bool st_read_all_prefers_pread(double resident, uint64_t len, uint64_t memory);

/* A byte source: a file whose bytes come from the caller (a remote object, memory, ...).
 * read_many fills every request (within [0, size), disjoint) with its own concurrency,
 * from any thread, and returns once no read into a destination runs, also on failure
 * (err set; ST_ERR_EXTERNAL where it reported the error its own way). release frees ctx. */
typedef struct st_source {
    void *ctx;
    uint64_t size;
    st_code (*read_many)(void *ctx, const st_read_request *requests, size_t count, st_error *err);
    void (*release)(void *ctx);
} st_source;

/* Opens a file over a byte source by st_file_open's rules and messages: backend
 * ST_BACKEND_PREAD, no mapping, no descriptor (st_file_map_private fails); each read call
 * is one read_many. On success the file owns the source; on failure the caller does. */
st_code st_file_open_source(const st_source *source, st_file **out, st_error *err);

/* MARK: selection (NumPy basic indexing over a tensor) */

/* One index item, already converted from Python. */
typedef enum st_index_kind {
    ST_INDEX_INT,   /* value */
    ST_INDEX_SLICE, /* start/stop/step with has_* flags (None when false) */
    ST_INDEX_ELLIPSIS,
    ST_INDEX_NEWAXIS
} st_index_kind;

typedef struct st_index {
    st_index_kind kind;
    int64_t value;
    int64_t start, stop, step;
    bool has_start, has_stop, has_step;
} st_index;

#define ST_MAX_DIMS 64

/* A selection: it starts at byte `offset` of the tensor and has `ndim` dims
 * of element `shape` and byte `strides` (may be negative); [span_offset,
 * span_offset + span_len) is the smallest byte range of the tensor holding it. */
typedef struct st_selection {
    size_t ndim;
    uint64_t shape[ST_MAX_DIMS];
    int64_t strides[ST_MAX_DIMS];
    int64_t offset;
    uint64_t nelements;
    uint64_t span_offset, span_len;
} st_selection;

/* NumPy basic indexing: ints (negative from the end), slices (any step, clamped like
 * Python), one Ellipsis, newaxis. ST_ERR_INVALID_SLICE: an int out of range, a zero step,
 * too many indices, two Ellipses. Sub-byte dtypes (F4, F6) select whole bytes only, else
 * ST_ERR_MISALIGNED_SLICE; their innermost dim's stride and shape count elements (bytes:
 * span_offset/span_len or st_selection_bytes). */
st_code st_select(const st_tensor *tensor, const st_index *indices, size_t count, st_selection *out,
                  st_error *err);

/* A sub-byte (F4, F6) selection as the same selection over bytes (itemsize 1);
 * other dtypes' are copied. */
st_code st_selection_bytes(const st_selection *sel, unsigned bits, st_selection *out,
                           st_error *err);

/* Copies the selected elements, C-ordered, of the tensor whose first byte is
 * src into dst (nelements * itemsize bytes). */
void st_selection_gather(const st_selection *sel, size_t itemsize, const uint8_t *src,
                         uint8_t *dst);

/* Reads the selected elements, C-ordered, of the tensor at absolute file offset
 * tensor_offset into dst: only the selected bytes where runs are long, else the span. */
st_code st_file_read_selection(const st_file *file, uint64_t tensor_offset, const st_selection *sel,
                               size_t itemsize, uint8_t *dst, st_error *err);

/* MARK: writer */

typedef struct st_write_tensor {
    const char *name;
    size_t name_len;
    st_dtype dtype;
    size_t ndim;
    const uint64_t *shape; /* logical shape */
    const void *data;
    uint64_t data_len;
} st_write_tensor;

/* A file to write: the caller fills the input half, st_write_layout the output
 * half. metadata may be NULL (absent) or have zero items with has_metadata. */
typedef struct st_layout {
    const st_write_tensor *tensors;
    size_t count;
    const st_metadata_item *metadata;
    size_t metadata_count;
    bool has_metadata;
    size_t *order; /* caller-allocated, count entries: tensor indices in file order */
    /* Output. */
    uint8_t *header; /* 8-byte length prefix + padded JSON; freed with st_free */
    size_t header_size;
    uint64_t total_size; /* size of the whole file */
} st_layout;

/* Lays out a file exactly as upstream 0.8.0 (docs/format.md §5): validates each tensor as
 * the reader would, sorts them (dtype descending, then name) into order, builds the
 * compact JSON (metadata first, in the caller's order) padded to a multiple of 8. */
st_code st_write_layout(st_layout *layout, st_error *err);

/* The largest alignment a writer pads to (docs/integrity.md). */
#define ST_MAX_ALIGNMENT 4096u
/* ST_OK if alignment is 0 (upstream's layout) or a power of two from 8 to ST_MAX_ALIGNMENT,
 * else ST_ERR_INVALID_ARGUMENT with a message saying so. */
st_code st_check_alignment(uint64_t alignment, st_error *err);
/* st_write_layout with the JSON padded with spaces (after it, as upstream pads) so that the
 * data section, at 8 + header length, starts at a multiple of alignment (0 or 8: upstream's
 * layout, byte for byte). Errors: st_check_alignment's, st_write_layout's. */
st_code st_write_layout_aligned(st_layout *layout, uint64_t alignment, st_error *err);

/* Writes the header then each tensor's bytes (in file order) into dst, which
 * has layout->total_size bytes. */
void st_write_to_memory(const st_layout *layout, uint8_t *dst);

/* Writes the file to path atomically (a temporary file beside it, vectored writes from
 * each tensor's memory, a rename; path untouched on failure) with the mode of the file
 * it replaces, else 0666 & ~umask. */
st_code st_write_file(const char *path, const st_layout *layout, st_error *err);

/* MARK: streaming writer and library version (st_stream.c) */

/* The major changes (with the soname) on an incompatible change, the minor when
 * something is added; st_api_version() gives the library's own value. */
#define ST_API_VERSION_MAJOR 2
#define ST_API_VERSION_MINOR 2
#define ST_API_VERSION       (ST_API_VERSION_MAJOR * 1000 + ST_API_VERSION_MINOR)
#define ST_FORMAT_VERSION    "0.8.0" /* upstream safetensors release whose files we match */
int st_api_version(void);

/*
 * A file written tensor by tensor (docs/streaming.md, docs/c-api.md): st_stream_open copies the
 * declarations (data ignored) and writes the header (as st_write_layout) to a temporary file;
 * st_stream_write writes each tensor once, by declaration index, from any threads; st_stream_commit
 * checks all were written and renames the file over path; an error, abort or free without commit
 * removes it. Errors: ST_ERR_INVALID_ARGUMENT (a name declared twice, a tensor written twice, a
 * wrong length, a tensor never written, use after close), ST_ERR_IO, or st_write_layout's.
 */
typedef struct st_stream st_stream;

st_code st_stream_open(const char *path, const st_write_tensor *tensors, size_t count,
                       const st_metadata_item *metadata, size_t metadata_count, bool has_metadata,
                       st_stream **out, st_error *err);
/* st_stream_open with the layout of st_write_layout_aligned. */
st_code st_stream_open_aligned(const char *path, const st_write_tensor *tensors, size_t count,
                               const st_metadata_item *metadata, size_t metadata_count,
                               bool has_metadata, uint64_t alignment, st_stream **out,
                               st_error *err);
/* The position-th tensor in file order (position < count): its declaration index, absolute
 * offset and size. */
void st_stream_tensor(const st_stream *stream, size_t position, size_t *index, uint64_t *offset,
                      uint64_t *len);
/* Reads len bytes at absolute offset back from the file being written (a tensor already
 * written, to hash it). ST_ERR_INVALID_ARGUMENT after close or past the end, or ST_ERR_IO. */
st_code st_stream_read(const st_stream *stream, uint64_t offset, void *dst, size_t len,
                       st_error *err);
/* Rewrites the header in place with new metadata (the same declarations and alignment): the
 * new header must have the length of the one written at open (digests of fixed length in
 * place of placeholders), else ST_ERR_INVALID_ARGUMENT and nothing is written. */
st_code st_stream_rewrite_metadata(st_stream *stream, const st_metadata_item *metadata,
                                   size_t metadata_count, bool has_metadata, st_error *err);
/* Declaration index of a tensor by name; false if not declared. */
bool st_stream_find(const st_stream *stream, const char *name, size_t name_len, size_t *index);
/* Writes the index-th tensor's len bytes (must equal its size). */
st_code st_stream_write(st_stream *stream, size_t index, const void *data, uint64_t len,
                        st_error *err);
st_code st_stream_commit(st_stream *stream, st_error *err);
void st_stream_abort(st_stream *stream);
void st_stream_free(st_stream *stream);

#if defined(ST_BUILDING_LIBRARY) && defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* ST_CORE_H */
