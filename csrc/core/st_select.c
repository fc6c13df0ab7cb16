/*
 * st_select.c - NumPy basic indexing over a tensor (st_select), and copying or reading what it
 * selects. Ints count from the end when negative and remove their dim (out of range: upstream's
 * "Invalid index 10 for dimension 0 of size 10"); slices follow PySlice_Unpack +
 * PySlice_AdjustIndices; one Ellipsis, and the trailing dims, take the dims no item names; newaxis
 * adds a dim of size 1, stride 0. An empty selection has offset 0 and span (0, 0).
 *
 * Sub-byte dtypes (F4: 4 bits, F6_*: 6 bits) allow whole bytes only, checked in bits: the last dim
 * taken by a slice (never an int) of step 1 (or of <= 1 element) whose start and count are whole
 * bytes, the first element on a byte, and every other dim of > 1 element moving by whole bytes.
 * `shape` then counts elements, offsets and spans bytes, strides bytes except the last dim's (1:
 * contiguous elements); a dim of <= 1 element with a partial-byte stride gets 0. Arithmetic is
 * checked: an empty tensor's strides may overflow, unused.
 */
#define _GNU_SOURCE
#define _DEFAULT_SOURCE

#include "st_core.h"

#include <string.h>

/* A start or stop bound after Python's clamping, for a dim of `length`. */
static int64_t clamp_bound(int64_t v, int64_t length, int64_t step)
{
    if (v < 0) {
        v += length;
        if (v < 0)
            v = step < 0 ? -1 : 0;
    } else if (v >= length) {
        v = step < 0 ? length - 1 : length;
    }
    return v;
}

/* Python's slice normalisation for a dim of `length` (<= INT64_MAX). */
static void adjust_slice(const st_index *ix, int64_t length, int64_t *pstart, int64_t *pstep,
                         uint64_t *pcount)
{
    int64_t step = ix->has_step ? ix->step : 1;
    if (step < -INT64_MAX)
        step = -INT64_MAX; /* as PySlice_Unpack: -step must not overflow */
    int64_t start = ix->has_start ? ix->start : (step < 0 ? INT64_MAX : 0);
    int64_t stop = ix->has_stop ? ix->stop : (step < 0 ? INT64_MIN : INT64_MAX);
    start = clamp_bound(start, length, step);
    stop = clamp_bound(stop, length, step);
    uint64_t count = 0;
    if (step < 0 && stop < start)
        count = (uint64_t)(start - stop - 1) / (uint64_t)(-step) + 1;
    else if (step > 0 && start < stop)
        count = (uint64_t)(stop - start - 1) / (uint64_t)step + 1;
    *pstart = start;
    *pstep = step;
    *pcount = count;
}

/* Per output dim bookkeeping, in bits to handle sub-byte dtypes uniformly. */
typedef struct out_dim {
    uint64_t start, count; /* start: the first index taken of the source dim */
    int64_t step_bits;     /* step * stride_bits of the source dim (0 for newaxis) */
    bool is_last;          /* comes from the tensor's last dim */
} out_dim;

/* The selection being built, walking the index items over the source dims. */
typedef struct walk {
    const st_tensor *tensor;
    int64_t sbits[ST_MAX_DIMS]; /* source strides in bits, C order */
    size_t d;                   /* next source dim */
    out_dim od[ST_MAX_DIMS];
    size_t on;
    int64_t off_bits; /* bit offset of the first element */
    bool overflow;    /* some arithmetic overflowed (an error unless empty) */
} walk;

/* Counts the consuming items (int, slice) and the Ellipses, and checks
 * that the tensor can be indexed this way at all. */
static st_code check_indices(const st_tensor *tensor, const st_index *indices, size_t count,
                             size_t *consumed, size_t *ellipses, st_error *err)
{
    *consumed = *ellipses = 0;
    if (tensor->ndim > ST_MAX_DIMS)
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                            "tensor has %zu dimensions, more than the maximum of %d", tensor->ndim,
                            ST_MAX_DIMS);
    if (st_dtype_bits(tensor->dtype) == 0)
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "unknown dtype");
    for (size_t i = 0; i < count; i++) {
        if (indices[i].kind == ST_INDEX_INT || indices[i].kind == ST_INDEX_SLICE)
            (*consumed)++;
        else if (indices[i].kind == ST_INDEX_ELLIPSIS)
            (*ellipses)++;
        else if (indices[i].kind != ST_INDEX_NEWAXIS)
            return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "unknown index kind %d",
                                (int)indices[i].kind);
    }
    if (*ellipses > 1)
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                            "an index can only have a single ellipsis ('...')");
    if (*consumed > tensor->ndim)
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                            "too many indices for tensor: tensor is %zu-dimensional, but %zu "
                            "were indexed",
                            tensor->ndim, *consumed);
    for (size_t d = 0; d < tensor->ndim; d++)
        if (tensor->shape[d] > (uint64_t)INT64_MAX)
            return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                                "dimension %zu of size %llu is too large to index", d,
                                (unsigned long long)tensor->shape[d]);
    return ST_OK;
}

/* Source strides in bits, C order: for a non-empty tensor <= its size in bits (checked
 * again here); for an empty one an overflowing stride becomes 0. */
static st_code source_strides(walk *w, unsigned bits, st_error *err)
{
    const st_tensor *t = w->tensor;
    int64_t acc = (int64_t)bits;
    bool overflow = false, empty = false;
    for (size_t d = t->ndim; d-- > 0;) {
        w->sbits[d] = overflow ? 0 : acc;
        overflow = overflow || __builtin_mul_overflow(acc, (int64_t)t->shape[d], &acc);
        empty = empty || t->shape[d] == 0;
    }
    return overflow && !empty ? st_error_code(err, ST_ERR_VALIDATION_OVERFLOW, 0) : ST_OK;
}

/* Appends an output dim taking `count` elements of source dim w->d from `start` (or of
 * no source dim: newaxis) at steps of step_bits. */
static st_code push_dim(walk *w, uint64_t start, uint64_t count, int64_t step_bits,
                        bool from_source, st_error *err)
{
    if (w->on >= ST_MAX_DIMS)
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                            "the selection would have more than %d dimensions", ST_MAX_DIMS);
    w->od[w->on++] = (out_dim){start, count, step_bits, from_source && w->d == w->tensor->ndim - 1};
    return ST_OK;
}

/* Moves the first element to element `index` of the next source dim. */
static void move_to(walk *w, int64_t index)
{
    int64_t bits;
    if (__builtin_mul_overflow(index, w->sbits[w->d], &bits) ||
        __builtin_add_overflow(w->off_bits, bits, &w->off_bits))
        w->overflow = true;
}

static st_code take_int(walk *w, int64_t v, st_error *err)
{
    int64_t len = (int64_t)w->tensor->shape[w->d];
    int64_t at = v < 0 ? v + len : v; /* no overflow: len >= 0 */
    if (at < 0 || at >= len)
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                            "Invalid index %lld for dimension %zu of size %lld", (long long)v, w->d,
                            (long long)len);
    move_to(w, at);
    w->d++;
    return ST_OK;
}

static st_code take_slice(walk *w, const st_index *ix, st_error *err)
{
    int64_t start, step, step_bits = w->sbits[w->d]; /* kept when it never moves */
    uint64_t cnt;
    st_code rc;
    if (ix->has_step && ix->step == 0)
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0, "slice step cannot be zero");
    adjust_slice(ix, (int64_t)w->tensor->shape[w->d], &start, &step, &cnt);
    if (cnt > 0)
        move_to(w, start);
    if (cnt > 1 && __builtin_mul_overflow(step, w->sbits[w->d], &step_bits))
        w->overflow = true;
    if ((rc = push_dim(w, (uint64_t)(start < 0 ? 0 : start), cnt, step_bits, true, err)) != ST_OK)
        return rc;
    w->d++;
    return ST_OK;
}

/* Takes n source dims whole (an Ellipsis, or the implicit trailing ones). */
static st_code take_full(walk *w, size_t n, st_error *err)
{
    static const st_index all = {.kind = ST_INDEX_SLICE};
    st_code rc = ST_OK;
    for (size_t k = 0; k < n && rc == ST_OK; k++)
        rc = take_slice(w, &all, err);
    return rc;
}

/* Applies every index item in order; Ellipsis and the implicit trailing
 * full slices take the source dims no item names. */
static st_code walk_indices(walk *w, const st_index *indices, size_t count, size_t consumed,
                            size_t ellipses, st_error *err)
{
    st_code rc = ST_OK;
    for (size_t i = 0; i < count && rc == ST_OK; i++) {
        const st_index *ix = &indices[i];
        if (ix->kind == ST_INDEX_ELLIPSIS)
            rc = take_full(w, w->tensor->ndim - consumed, err);
        else if (ix->kind == ST_INDEX_NEWAXIS)
            rc = push_dim(w, 0, 1, 0, false, err);
        else if (ix->kind == ST_INDEX_INT)
            rc = take_int(w, ix->value, err);
        else
            rc = take_slice(w, ix, err);
    }
    if (rc == ST_OK && ellipses == 0)
        rc = take_full(w, w->tensor->ndim - w->d, err);
    return rc;
}

/* The sub-byte rule (see the top of this file), checked in bits; false also when no
 * slice took the last dim. */
static bool whole_bytes(const walk *w, unsigned bits)
{
    bool sliced_last = false;
    for (size_t k = 0; k < w->on; k++) {
        const out_dim *od = &w->od[k];
        sliced_last = sliced_last || od->is_last;
        if (od->is_last ? (od->count > 1 && od->step_bits != (int64_t)bits) ||
                              (od->start * bits) % 8 != 0 || (od->count * bits) % 8 != 0
                        : od->count > 1 && od->step_bits % 8 != 0)
            return false;
    }
    return sliced_last && w->off_bits % 8 == 0;
}

/* An empty selection addresses nothing: C-contiguous strides, offset 0. */
static void empty_strides(const walk *w, unsigned bits, st_selection *out)
{
    int64_t acc = bits % 8 ? 1 : (int64_t)(bits / 8);
    for (size_t k = w->on; k-- > 0;) {
        out->strides[k] = acc;
        uint64_t c = w->od[k].count ? w->od[k].count : 1;
        if (__builtin_mul_overflow(acc, (int64_t)(c > (uint64_t)INT64_MAX ? 1 : c), &acc))
            acc = 0;
    }
}

/* Byte strides, offset and the smallest span holding the selection. */
static st_code strides_and_span(const walk *w, unsigned bits, st_selection *out, st_error *err)
{
    const bool subbyte = bits % 8 != 0;
    int64_t lo = 0, hi = 0; /* relative to offset, in bytes, of run starts */
    int64_t run = (int64_t)(bits / 8);
    for (size_t k = 0; k < w->on; k++) {
        const out_dim *od = &w->od[k];
        int64_t sb, ext;
        if (subbyte && od->is_last) {
            out->strides[k] = 1; /* elements; the run is accounted for below */
            run = (int64_t)(od->count * bits / 8);
            continue;
        }
        /* A stride that is not whole bytes only has count <= 1 (checked). */
        sb = od->step_bits % 8 == 0 ? od->step_bits / 8 : 0;
        out->strides[k] = sb;
        if (__builtin_mul_overflow((int64_t)(od->count - 1), sb, &ext))
            return st_error_code(err, ST_ERR_VALIDATION_OVERFLOW, 0);
        if (ext < 0)
            lo += ext;
        else
            hi += ext;
    }
    out->offset = w->off_bits / 8;
    out->span_offset = (uint64_t)(out->offset + lo);
    out->span_len = (uint64_t)(hi - lo + run);
    return ST_OK;
}

st_code st_select(const st_tensor *tensor, const st_index *indices, size_t count, st_selection *out,
                  st_error *err)
{
    walk w = {.tensor = tensor};
    size_t consumed, ellipses;
    st_code rc;
    unsigned bits = st_dtype_bits(tensor->dtype);

    if ((rc = check_indices(tensor, indices, count, &consumed, &ellipses, err)) != ST_OK ||
        (rc = source_strides(&w, bits, err)) != ST_OK ||
        (rc = walk_indices(&w, indices, count, consumed, ellipses, err)) != ST_OK)
        return rc;

    memset(out, 0, sizeof *out);
    out->ndim = w.on;
    out->nelements = 1;
    bool empty = false;
    for (size_t k = 0; k < w.on; k++) {
        out->shape[k] = w.od[k].count;
        empty = empty || w.od[k].count == 0;
        if (__builtin_mul_overflow(out->nelements, w.od[k].count, &out->nelements))
            w.overflow = true;
    }
    if (empty) {
        out->nelements = 0;
        empty_strides(&w, bits, out);
        return ST_OK;
    }
    if (w.overflow)
        return st_error_code(err, ST_ERR_VALIDATION_OVERFLOW, 0);
    if (bits % 8 != 0 && !whole_bytes(&w, bits))
        return st_error_code(err, ST_ERR_MISALIGNED_SLICE, 0);
    return strides_and_span(&w, bits, out, err);
}

st_code st_selection_bytes(const st_selection *sel, unsigned bits, st_selection *out, st_error *err)
{
    *out = *sel;
    if (bits % 8 == 0 || sel->nelements == 0)
        return ST_OK;
    /* The innermost run is the last output dim with a non-zero stride (trailing newaxes
     * have 0; the run has >= 2 elements, so stride 1). */
    for (size_t k = sel->ndim; k-- > 0;) {
        if (sel->strides[k] == 0)
            continue;
        if (sel->strides[k] != 1 || (sel->shape[k] * bits) % 8 != 0)
            break;
        out->shape[k] = sel->shape[k] * bits / 8;
        out->nelements = sel->nelements / sel->shape[k] * out->shape[k];
        return ST_OK;
    }
    return st_error_code(err, ST_ERR_MISALIGNED_SLICE, 0);
}

/* n elements of itemsize bytes, stride bytes apart, to dst; the common sizes
 * get a constant-size memcpy the compiler turns into one move. */
static void copy_strided(uint8_t *dst, const uint8_t *src, uint64_t n, int64_t stride,
                         size_t itemsize)
{
#define COPY(size)                                                                                 \
    for (uint64_t i = 0; i < n; i++, src += stride, dst += (size))                                 \
        memcpy(dst, src, (size));                                                                  \
    return
    switch (itemsize) {
    case 1: COPY(1);
    case 2: COPY(2);
    case 4: COPY(4);
    case 8: COPY(8);
    default: COPY(itemsize);
    }
#undef COPY
}

/* Drops size-1 dims and merges dims contiguous with the next one; returns
 * the number of dims left (0: a single element). */
static size_t normalize_runs(const st_selection *sel, uint64_t *shape, int64_t *strides)
{
    size_t m = 0;
    for (size_t k = 0; k < sel->ndim; k++) {
        if (sel->shape[k] == 1)
            continue;
        if (m > 0 && strides[m - 1] == (int64_t)sel->shape[k] * sel->strides[k])
            shape[m - 1] *= sel->shape[k];
        else
            shape[m++] = sel->shape[k];
        strides[m - 1] = sel->strides[k];
    }
    return m;
}

/* Advances the odometer idx over dims [0, outer) and returns the byte step
 * to the next position; *done when it wrapped around. */
static int64_t next_position(uint64_t *idx, const uint64_t *shape, const int64_t *strides,
                             size_t outer, bool *done)
{
    int64_t step = 0;
    for (size_t k = outer; k-- > 0;) {
        idx[k]++;
        step += strides[k];
        if (idx[k] < shape[k])
            return step;
        step -= (int64_t)shape[k] * strides[k];
        idx[k] = 0;
    }
    *done = true;
    return step;
}

void st_selection_gather(const st_selection *sel, size_t itemsize, const uint8_t *src, uint8_t *dst)
{
    uint64_t shape[ST_MAX_DIMS], idx[ST_MAX_DIMS] = {0};
    int64_t strides[ST_MAX_DIMS];
    bool done = false;
    if (sel->nelements == 0 || itemsize == 0)
        return;
    size_t m = normalize_runs(sel, shape, strides);
    const uint8_t *p = src + sel->offset;
    const uint64_t inner_n = m ? shape[m - 1] : 1; /* m == 0: a single element */
    const int64_t inner_s = m ? strides[m - 1] : (int64_t)itemsize;
    const size_t run_bytes = (size_t)inner_n * itemsize;
    while (!done) {
        if (inner_s == (int64_t)itemsize)
            memcpy(dst, p, run_bytes);
        else
            copy_strided(dst, p, inner_n, inner_s, itemsize);
        dst += run_bytes;
        p += next_position(idx, shape, strides, m ? m - 1 : 0, &done);
    }
}

/* Runs at least this long are read straight into place; shorter ones come
 * from one read of the span around them, unless that span is mostly waste. */
#define ST_DIRECT_RUN_MIN ((size_t)64 << 10)
#define ST_SPAN_WASTE_MAX 64

st_code st_file_read_selection(const st_file *file, uint64_t tensor_offset, const st_selection *sel,
                               size_t itemsize, uint8_t *dst, st_error *err)
{
    uint64_t shape[ST_MAX_DIMS], idx[ST_MAX_DIMS] = {0};
    int64_t strides[ST_MAX_DIMS];
    uint64_t selected = sel->nelements * itemsize;
    st_code rc = ST_OK;
    bool done = false;

    if (selected == 0)
        return ST_OK;
    size_t m = normalize_runs(sel, shape, strides);
    bool inner_contiguous = m == 0 || strides[m - 1] == (int64_t)itemsize;
    bool sparse = sel->span_len / selected > ST_SPAN_WASTE_MAX;
    size_t run = m == 0 ? itemsize : (size_t)shape[m - 1] * itemsize;
    if (inner_contiguous ? (m <= 1 || run >= ST_DIRECT_RUN_MIN || sparse) : sparse) {
        /* Only the selected bytes, read into place: whole rows where the innermost dim
         * is contiguous, else single elements (sparse: the span would be mostly waste). */
        size_t outer = inner_contiguous ? (m == 0 ? 0 : m - 1) : m;
        int64_t at = sel->offset;
        if (!inner_contiguous)
            run = itemsize;
        /* One st_file_read_many: a byte source sees all the runs and can coalesce them. */
        size_t count = (size_t)(selected / run), i = 0;
        st_read_request *requests = st_malloc(count * sizeof *requests);
        if (requests == NULL)
            return st_error_code(err, ST_ERR_NOMEM, 0);
        while (!done) {
            requests[i++] = (st_read_request){tensor_offset + (uint64_t)at, dst, run};
            dst += run;
            at += next_position(idx, shape, strides, outer, &done);
        }
        rc = st_file_read_many(file, requests, i, err);
        st_free(requests);
        return rc;
    }
    uint8_t *span = st_malloc((size_t)sel->span_len);
    if (span == NULL)
        return st_error_code(err, ST_ERR_NOMEM, 0);
    rc = st_file_read(file, tensor_offset + sel->span_offset, span, (size_t)sel->span_len, err);
    if (rc == ST_OK) {
        st_selection local = *sel;
        local.offset -= (int64_t)sel->span_offset;
        st_selection_gather(&local, itemsize, span, dst);
    }
    st_free(span);
    return rc;
}
