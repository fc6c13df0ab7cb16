/*
 * st_core.h - the public API of the safetensors C core.
 *
 * Plain C11, no Python.h. Everything a C program needs to read, validate,
 * map, slice and write safetensors files (format: docs/format.md, which
 * follows upstream safetensors 0.8.0 byte for byte).
 *
 * Conventions
 *   - Every fallible function returns ST_OK (0) or an st_code, and fills the
 *     caller's st_error with the code, a message and the byte offset in the
 *     file where the problem was found (0 when it has no position).
 *   - Messages for the format errors are upstream's Display texts (docs/format.md §7)
 *     so the binding can prefix them exactly as upstream does.
 *   - A parsed header and an open file are immutable and may be read from
 *     any number of threads. The one global mutable state is the descriptor
 *     cache (see st_file below): one process-wide list under one mutex,
 *     held across fork. st_alloc_fail_after's counter is a test hook.
 *   - Allocation goes through st_malloc/st_free so tests can inject failures.
 */
#ifndef ST_CORE_H
#define ST_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Building the shared library (csrc/Makefile `lib`, -fvisibility=hidden):
 * everything declared in this header is exported, nothing else is. */
#if defined(ST_BUILDING_LIBRARY) && defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* ======================================================================
 * MARK: errors
 * ====================================================================== */

/* Each code's message text is in the table in st_error.c (st_code_text);
 * docs/format.md §7 says which check gives which. */
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

/* Longest message the core writes, NUL included. Tensor names inside messages
 * are truncated to keep within it. */
#define ST_ERROR_MSG_MAX 512

typedef struct st_error {
    st_code code;
    int sys_errno;   /* errno for ST_ERR_IO, else 0 */
    uint64_t offset; /* byte offset in the file, 0 if none */
    char msg[ST_ERROR_MSG_MAX];
} st_error;

/* Sets *err and returns code. The message is the code's text (st_code_text)
 * followed by the printf-style details. */
st_code st_error_set(st_error *err, st_code code, uint64_t offset, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Sets *err to a code whose text is the whole message ("out of memory",
 * "header too large", ...) and returns code. */
st_code st_error_code(st_error *err, st_code code, uint64_t offset);
/* Rust's Debug form of a UTF-8 string, as upstream's messages quote names:
 * "a\"b\n", controls as \u{1b}, at most 160 bytes of s then "...". out gets
 * at most 7 bytes per input byte plus 6; it is always NUL-terminated. */
void st_debug_str(const char *s, size_t n, char *out, size_t cap);
/* ST_ERR_IO from an errno value: "I/O error: <strerror> (os error N)". */
st_code st_error_io(st_error *err, int sys_errno, uint64_t offset);
/* A short stable name of a code ("HeaderTooLarge", ...), as upstream's enum variants. */
const char *st_code_name(st_code code);
/* The code's message text, from the one table in st_error.c: the whole
 * message where the code has no details, else how the message starts
 * ("invalid JSON in header: ", "I/O error: "); "" where it has no fixed part. */
const char *st_code_text(st_code code);

/* ======================================================================
 * MARK: allocation (failure injection for tests)
 * ====================================================================== */

void *st_malloc(size_t size);
void *st_calloc(size_t count, size_t size);
void *st_realloc(void *ptr, size_t size);
void st_free(void *ptr);
/* Test hook: make the n-th allocation from now on (1-based) fail, then all
 * later ones succeed again. 0 disables. Not thread-safe: tests only. */
void st_alloc_fail_after(uint64_t n);

/* ======================================================================
 * MARK: dtypes
 * ====================================================================== */

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

/* Where NumPy finds a dtype's type_name. */
typedef enum st_numpy_source {
    ST_NUMPY_NONE = 0, /* NumPy cannot hold it (F4, F6_*) */
    ST_NUMPY_BUILTIN,  /* numpy.<type_name> */
    ST_NUMPY_ML_DTYPES /* ml_dtypes.<type_name> (bfloat16, float8_*) */
} st_numpy_source;

/*
 * Everything a layer needs to know about a dtype: the one dtype table
 * (st_dtype.c; docs/format.md §3). Python reads it through the
 * extension; no other layer keeps its own copy.
 */
typedef struct st_dtype_info {
    st_dtype dtype;
    const char *name;      /* header spelling: "F32" */
    unsigned bits;         /* bits per element: 4 (F4), 6 (F6_*), else 8 x bytes */
    const char *type_name; /* the element type's name in torch, NumPy/ml_dtypes and
                                 * paddle, and the TensorSpec dtype vocabulary: "float32",
                                 * "bfloat16", "float4_e2m1fn_x2"; NULL for F6_* (no
                                 * framework has them) */
    st_numpy_source numpy; /* where NumPy finds type_name */
    unsigned pack;         /* logical elements in one framework item: 2 for F4
                                 * (ST_F4_PER_ITEM), else 1 */
} st_dtype_info;

/* The table row of dtype; NULL if dtype is out of range. */
const st_dtype_info *st_dtype_info_get(st_dtype dtype);
/* Header token, e.g. "F32"; "?" if out of range. */
const char *st_dtype_name(st_dtype dtype);
/* Bits per element: 4 for F4, 6 for F6_*, else 8 * bytes; 0 if out of range. */
unsigned st_dtype_bits(st_dtype dtype);
/* Parses a header token (exact, case-sensitive). Returns false if unknown. */
bool st_dtype_from_name(const char *name, size_t len, st_dtype *out);
/* Parses a type_name ("float32"). Returns false if unknown. */
bool st_dtype_from_type_name(const char *name, size_t len, st_dtype *out);

/*
 * F4 packing (docs/format.md §3.2). A file holds F4 values two to a byte
 * and gives the logical shape (counting values). Frameworks hold them as
 * pairs (torch.float4_e2m1fn_x2: one byte, two values), so their shape is
 * the logical one with the last dim divided by ST_F4_PER_ITEM, which needs
 * an even last dim. The core never splits a byte, so it needs no nibble
 * order.
 */
#define ST_F4_PER_ITEM 2
/* Framework shape's last dim from the logical one: divided by info->pack.
 * ST_ERR_INVALID_ARGUMENT when it does not divide. */
st_code st_dtype_packed_dim(st_dtype dtype, uint64_t logical, uint64_t *packed, st_error *err);
/* Logical last dim from the framework's: multiplied by info->pack.
 * ST_ERR_INVALID_ARGUMENT when that overflows. */
st_code st_dtype_unpacked_dim(st_dtype dtype, uint64_t packed, uint64_t *logical, st_error *err);

/* ======================================================================
 * MARK: header (parse + validate)
 * ====================================================================== */

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

/*
 * Rules 1-3 of docs/format.md §6 on the first bytes of a file: prefix holds
 * min(file_size, 8) bytes. On success *header_len = N (the JSON length).
 */
st_code st_header_length(const uint8_t *prefix, size_t prefix_len, uint64_t file_size,
                         uint64_t *header_len, st_error *err);

/*
 * Rules 4-8 of docs/format.md §6: json points at the N header bytes (those at file
 * offset 8), file_size is the whole file's length (used by rule 7). Error
 * offsets are file offsets (8 + position in json). On success *out owns a
 * copy of everything it needs; json may be freed.
 */
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
/* Metadata: has_metadata is false for absent or null "__metadata__". Items
 * are in file order; a repeated key appears twice (later wins, as upstream). */
bool st_header_has_metadata(const st_header *header);
size_t st_header_metadata_count(const st_header *header);
const st_metadata_item *st_header_metadata_item(const st_header *header, size_t i);

/* Byte size of a tensor: product(shape) * bits / 8, checked. */
st_code st_tensor_nbytes(st_dtype dtype, const uint64_t *shape, size_t ndim, uint64_t *nbytes,
                         st_error *err);

/* Strict JSON validation of a whole document (RFC 8259, UTF-8, depth limit,
 * only whitespace after the value), with the header's messages
 * ("invalid JSON in header: ... at line L column C"). Used by the JSON
 * conformance tests. */
st_code st_json_validate(const uint8_t *text, size_t len, st_error *err);

/* ======================================================================
 * MARK: files (mapping and pread backends)
 * ====================================================================== */

typedef enum st_backend { ST_BACKEND_MMAP = 0, ST_BACKEND_PREAD = 1 } st_backend;

/*
 * An open, validated safetensors file.
 *
 * Ownership: st_file_open returns a file with one reference. Every holder of
 * a pointer into the mapping (a tensor view) takes its own reference with
 * st_file_retain and gives it back with st_file_release; the last release
 * unmaps (mmap backend), closes its descriptor if the cache still holds it
 * and frees the header. The reference count is atomic, so retain/release
 * are safe from any thread.
 *
 * Mapping: the whole file, MAP_PRIVATE (copy-on-write: writes through a
 * view never reach the file) and MAP_NORESERVE (nothing is reserved up
 * front, so files larger than RAM open and page in lazily).
 *
 * Descriptors: a file does not keep one for its whole life. Pread reads and
 * private maps borrow it from a process-wide cache that keeps at most 64
 * unused (a sixteenth of RLIMIT_NOFILE's soft limit if lower) and closes the
 * least recently used; a file whose descriptor was closed reopens its path
 * and checks that it is the file opened (device, inode, size, mtime). If not
 * (replaced, deleted, modified), pread reads fail with ST_ERR_IO ("the file
 * changed after it was opened ..."), and st_file_map_private on the mmap
 * backend copies from the whole-file mapping instead.
 */
typedef struct st_file st_file;

st_code st_file_open(const char *path, st_backend backend, st_file **out, st_error *err);
void st_file_retain(st_file *file);
void st_file_release(st_file *file);

const st_header *st_file_header(const st_file *file);
st_backend st_file_backend(const st_file *file);
uint64_t st_file_size(const st_file *file);
/* ST_OK for the st_mode of a regular file; else what opening or replacing
 * the file gives: EISDIR for a directory, "I/O error: not a regular file
 * (a FIFO)" (sys_errno EINVAL) for anything else. */
st_code st_file_check_regular(unsigned int mode, st_error *err);
/* Base of the mapping (mmap backend), NULL for pread. */
uint8_t *st_file_map(const st_file *file);
/*
 * A copy-on-write mapping of its own over the file bytes [offset, offset +
 * len) (absolute offsets, len > 0, either backend): writes through it show
 * nowhere else and never reach the file, and it stays valid after the file
 * is released. What one handed-out tensor owns; st_private_map_release
 * unmaps it.
 */
typedef struct st_private_map {
    void *base; /* page-aligned start, for munmap */
    size_t len;
    uint8_t *data; /* the byte at `offset` */
} st_private_map;
st_code st_file_map_private(const st_file *file, uint64_t offset, uint64_t len, st_private_map *out,
                            st_error *err);
/* Unmaps it (and empties *map). */
void st_private_map_release(st_private_map *map);
/* Gives back the pages wholly inside [addr, addr + len) of a private
 * mapping (MADV_DONTNEED): written copies are freed, and the range reads
 * as the file again. For a tensor of a shared mapping that dies before its
 * neighbours. */
void st_private_map_discard(uint8_t *addr, size_t len);
/* Reads len bytes at absolute file offset into dst (pread backend; also
 * works on the mmap backend by copying). Short reads are an I/O error. */
st_code st_file_read(const st_file *file, uint64_t offset, void *dst, size_t len, st_error *err);
/* One read of st_file_read_many: len bytes at absolute file offset into dst. */
typedef struct st_read_request {
    uint64_t offset;
    void *dst;
    size_t len;
} st_read_request;
/*
 * Reads every request, the large ones split into chunks that a few threads
 * of this call take from one queue, so several reads are in flight and one
 * large request does not serialize the rest. Destinations must not overlap.
 * Every request is checked against the file before a byte is read. On
 * failure err describes the first failure seen and the destinations hold
 * unspecified bytes: callers hand out nothing.
 */
st_code st_file_read_many(const st_file *file, const st_read_request *requests, size_t count,
                          st_error *err);

/*
 * A byte source: a file whose bytes come from the caller (a remote object,
 * memory, ...) instead of a path. read_many fills every request (each within
 * [0, size), destinations disjoint) and returns only once no read into a
 * destination is still running, also when it fails; it does its own
 * concurrency and may be called from any thread. On failure it returns an
 * st_code with err set: ST_ERR_EXTERNAL where it reported the error its own
 * way. release frees ctx (the file's last release).
 */
typedef struct st_source {
    void *ctx;
    uint64_t size;
    st_code (*read_many)(void *ctx, const st_read_request *requests, size_t count, st_error *err);
    void (*release)(void *ctx);
} st_source;

/*
 * Opens a file over a byte source: the length prefix and the header are read
 * through read_many and checked by exactly the rules (and messages) of
 * st_file_open. The file has no mapping and no descriptor: its backend is
 * ST_BACKEND_PREAD, st_file_read and st_file_read_many hand every request to
 * the source in one read_many call, st_file_map_private fails. On success
 * the file owns the source (released at its last release); on failure the
 * caller still does.
 */
st_code st_file_open_source(const st_source *source, st_file **out, st_error *err);

/* ======================================================================
 * MARK: selection (NumPy basic indexing over a tensor)
 * ====================================================================== */

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

/*
 * Result of applying indices to a tensor with NumPy semantics: the view
 * starts at byte `offset` (relative to the tensor's first byte) and has
 * `ndim` dims with element `shape` and byte `strides` (may be negative).
 * nbytes_span is the length of the smallest byte range holding it, and
 * span_offset its start (relative to the tensor).
 */
typedef struct st_selection {
    size_t ndim;
    uint64_t shape[ST_MAX_DIMS];
    int64_t strides[ST_MAX_DIMS];
    int64_t offset;
    uint64_t nelements;
    uint64_t span_offset, span_len;
} st_selection;

/*
 * NumPy basic indexing: ints (negative from the end), slices (steps of any
 * sign, clamped like Python), one Ellipsis, newaxis. Errors (ST_ERR_INVALID_SLICE):
 * an out-of-range int, a zero step, too many indices, two Ellipses. Sub-byte
 * dtypes (F4, F6) can only be selected on whole bytes: a selection whose
 * innermost run does not start and end on a byte boundary gives
 * ST_ERR_MISALIGNED_SLICE. For them `strides`/`shape` of the innermost dim
 * are in elements and callers work on bytes via span_offset/span_len.
 */
st_code st_select(const st_tensor *tensor, const st_index *indices, size_t count, st_selection *out,
                  st_error *err);

/* Turns a selection of a sub-byte dtype (F4, F6) into the equivalent
 * selection over bytes (itemsize 1) whose innermost run is the selected
 * bytes; for other dtypes it copies. */
st_code st_selection_bytes(const st_selection *sel, unsigned bits, st_selection *out,
                           st_error *err);

/* Copies the selected elements, C-ordered, from the tensor whose first byte
 * is `src` into dst (which holds nelements * itemsize bytes). */
void st_selection_gather(const st_selection *sel, size_t itemsize, const uint8_t *src,
                         uint8_t *dst);

/* Reads the selected elements, C-ordered, of the tensor at absolute file
 * offset tensor_offset into dst (nelements * itemsize bytes), reading only
 * the selected bytes where the runs are long, else the span around them. */
st_code st_file_read_selection(const st_file *file, uint64_t tensor_offset, const st_selection *sel,
                               size_t itemsize, uint8_t *dst, st_error *err);

/* ======================================================================
 * MARK: writer
 * ====================================================================== */

typedef struct st_write_tensor {
    const char *name;
    size_t name_len;
    st_dtype dtype;
    size_t ndim;
    const uint64_t *shape; /* logical shape */
    const void *data;
    uint64_t data_len;
} st_write_tensor;

/*
 * A file to write: the caller fills the input half, st_write_layout the
 * output half. metadata may be NULL (absent) or have zero items with
 * has_metadata (present but empty).
 */
typedef struct st_layout {
    const st_write_tensor *tensors;
    size_t count;
    const st_metadata_item *metadata;
    size_t metadata_count;
    bool has_metadata;
    size_t *order; /* caller-allocated, count entries: tensor indices in file order */
    /* Output. */
    uint8_t *header; /* 8-byte length prefix + padded JSON; the caller frees it
                                 * with st_free */
    size_t header_size;
    uint64_t total_size; /* size of the whole file */
} st_layout;

/*
 * Lays out a file exactly as upstream 0.8.0 does (docs/format.md §5):
 * sorts the tensors (dtype descending, then name) into layout->order,
 * builds the compact JSON with metadata first (in the caller's order) and
 * pads it with spaces to a multiple of 8. Validates every tensor as the
 * reader would.
 */
st_code st_write_layout(st_layout *layout, st_error *err);

/* Writes the header then each tensor's bytes (in file order) into dst,
 * which has layout->total_size bytes. */
void st_write_to_memory(const st_layout *layout, uint8_t *dst);

/*
 * Writes the file to `path` atomically: a temporary file in the same
 * directory, vectored writes straight from each tensor's memory, then a
 * rename over path. On any failure the temporary file is removed and `path`
 * is untouched. The new file gets the mode of the file it replaces, or
 * 0666 & ~umask for a new file (what open() gives).
 */
st_code st_write_file(const char *path, const st_layout *layout, st_error *err);

/* ======================================================================
 * MARK: streaming writer and library version (tools; st_stream.c)
 * ====================================================================== */

/* The C API's version: the major changes when a declaration here changes
 * incompatibly, the minor when one is added. st_api_version() gives the
 * library's own value, so a program can check it runs against what it was
 * compiled with. */
#define ST_API_VERSION_MAJOR 1
#define ST_API_VERSION_MINOR 1
#define ST_API_VERSION       (ST_API_VERSION_MAJOR * 1000 + ST_API_VERSION_MINOR)
#define ST_FORMAT_VERSION    "0.8.0" /* upstream safetensors release whose files we match */
int st_api_version(void);

/*
 * A file written tensor by tensor. st_stream_open takes every tensor's name,
 * dtype and shape (st_write_tensor; data and data_len are ignored) and the
 * metadata, lays the file out exactly as st_write_layout does (so the result
 * is byte-identical to st_write_file of the same tensors), creates a
 * temporary file next to `path` and writes the header. Then each tensor is
 * written once with st_stream_write, by its index in the declaration, in any
 * order. st_stream_commit checks that every tensor was written and renames
 * the temporary file over `path`; anything else (an error, st_stream_abort,
 * st_stream_free without commit) removes the temporary file and leaves `path`
 * as it was.
 *
 * Ownership: st_stream_open copies names, shapes and metadata; the caller's
 * arrays may be freed right after it returns. The stream owns the temporary
 * file until commit; st_stream_free releases everything (always call it).
 *
 * Threads: st_stream_write may run concurrently from any number of threads
 * (on different tensors; the same tensor twice is an error, not a race).
 * st_stream_commit, st_stream_abort and st_stream_free must not overlap any
 * st_stream_write on the same stream.
 *
 * Errors (ST_ERR_INVALID_ARGUMENT unless said): a name declared twice, a
 * tensor written twice, data of the wrong length, a tensor never written
 * (at commit), a write or commit after the stream was closed; I/O failures
 * are ST_ERR_IO; layout errors as st_write_layout.
 */
typedef struct st_stream st_stream;

st_code st_stream_open(const char *path, const st_write_tensor *tensors, size_t count,
                       const st_metadata_item *metadata, size_t metadata_count, bool has_metadata,
                       st_stream **out, st_error *err);
size_t st_stream_count(const st_stream *stream);
/* Declaration index of a tensor by name; false if not declared. */
bool st_stream_find(const st_stream *stream, const char *name, size_t name_len, size_t *index);
/* Byte size of the index-th declared tensor (0 if out of range). */
uint64_t st_stream_tensor_nbytes(const st_stream *stream, size_t index);
/* Writes the index-th tensor's len bytes (must equal its size). */
st_code st_stream_write(st_stream *stream, size_t index, const void *data, uint64_t len,
                        st_error *err);
st_code st_stream_commit(st_stream *stream, st_error *err);
void st_stream_abort(st_stream *stream);
void st_stream_free(st_stream *stream);

/* ====================================================================== */

#if defined(ST_BUILDING_LIBRARY) && defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* ST_CORE_H */
