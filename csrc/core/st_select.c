/*
 * st_select.c - NumPy basic indexing over a tensor, and the gather copy.
 *
 * st_select applies a list of index items (int, slice, Ellipsis, newaxis)
 * exactly as NumPy basic indexing does:
 *   - ints: negative values count from the end; out of range is an error
 *     (upstream's "Invalid index 10 for dimension 0 of size 10"); an int removes
 *     its dimension.
 *   - slices: Python's rules (PySlice_Unpack + PySlice_AdjustIndices):
 *     defaults depend on the step's sign, bounds are clamped, never an
 *     error; a zero step is ("slice step cannot be zero").
 *   - one Ellipsis expands to as many full slices as needed; a second one is
 *     an error ("an index can only have a single ellipsis ('...')").
 *   - newaxis inserts a dimension of size 1 with stride 0.
 *   - fewer indices than dims: the rest are full slices. Too many:
 *     "too many indices for tensor: tensor is 2-dimensional, but 3 were indexed".
 * The result: byte `offset` of the first selected element relative to the
 * tensor's first byte, element `shape`, byte `strides` (negative for negative
 * steps), `nelements`, and the smallest byte range [span_offset,
 * span_offset + span_len) holding every selected element (0, 0 when
 * nelements == 0; `offset` is 0 then too).
 *
 * Sub-byte dtypes (F4: 4 bits, F6_*: 6 bits)
 *   Only selections made of whole bytes are allowed, else
 *   ST_ERR_MISALIGNED_SLICE with upstream's message. Rule, checked in bits:
 *     - the tensor's last dimension must be selected by a slice (an int
 *       there is rejected: one element is never a whole number of bytes),
 *       with step 1 (any step is accepted when it selects <= 1 element),
 *       and start*bits and count*bits both multiples of 8;
 *     - the bit offset of the first element is a multiple of 8, and every
 *       other dimension that selects more than one element moves by a
 *       whole number of bytes (step*stride_bits % 8 == 0).
 *   A selection with no elements is always accepted.
 *   Representation: `shape` is in logical elements. `offset`, `span_offset`,
 *   `span_len` are in bytes. `strides` are in bytes for every dimension
 *   except the one coming from the tensor's last dimension, whose stride is
 *   1 (meaning: contiguous elements); a dimension with <= 1 element whose
 *   stride is not a whole number of bytes gets stride 0 (it is never used).
 *   The selected bytes are C-ordered runs of (count*bits/8) bytes; to copy
 *   them, turn the selection into a byte selection with
 *   st_selection_bytes() and gather with itemsize 1.
 *
 * All arithmetic is checked: dims come from a validated header but a
 * zero-sized tensor may still have dims whose strides overflow; those
 * strides are never used to address memory (the result is empty).
 */
#define _GNU_SOURCE
#define _DEFAULT_SOURCE

#include "st_core.h"

#include <string.h>

static const char MISALIGNED_MSG[] =
    "The slice is slicing for subbytes dtypes, and the slice does not end up at a byte "
    "boundary, this is invalid.";

/* Python's slice normalisation for a dim of `length` (<= INT64_MAX). */
static void adjust_slice(const st_index *ix, int64_t length, int64_t *pstart, int64_t *pstep,
                         uint64_t *pcount)
{
    int64_t step = ix->has_step ? ix->step : 1;
    if (step < -INT64_MAX) {
        step = -INT64_MAX;   /* as PySlice_Unpack: -step must not overflow */
    }
    int64_t start, stop;
    if (ix->has_start) {
        start = ix->start;
    } else {
        start = step < 0 ? INT64_MAX : 0;
    }
    if (ix->has_stop) {
        stop = ix->stop;
    } else {
        stop = step < 0 ? INT64_MIN : INT64_MAX;
    }
    if (start < 0) {
        start += length;
        if (start < 0) {
            start = step < 0 ? -1 : 0;
        }
    } else if (start >= length) {
        start = step < 0 ? length - 1 : length;
    }
    if (stop < 0) {
        stop += length;
        if (stop < 0) {
            stop = step < 0 ? -1 : 0;
        }
    } else if (stop >= length) {
        stop = step < 0 ? length - 1 : length;
    }
    uint64_t count = 0;
    if (step < 0) {
        if (stop < start) {
            count = (uint64_t)(start - stop - 1) / (uint64_t)(-step) + 1;
        }
    } else {
        if (start < stop) {
            count = (uint64_t)(stop - start - 1) / (uint64_t)step + 1;
        }
    }
    *pstart = start;
    *pstep = step;
    *pcount = count;
}

/* Per output dim bookkeeping, in bits to handle sub-byte dtypes uniformly. */
typedef struct out_dim {
    uint64_t count;
    int64_t step_bits;      /* step * stride_bits of the source dim (0 for newaxis) */
    bool is_last;           /* comes from the tensor's last dim */
} out_dim;

static bool mul_i64(int64_t a, int64_t b, int64_t *r)
{
    return !__builtin_mul_overflow(a, b, r);
}

static bool add_i64(int64_t a, int64_t b, int64_t *r)
{
    return !__builtin_add_overflow(a, b, r);
}

st_code st_select(const st_tensor *tensor, const st_index *indices, size_t count,
                  st_selection *out, st_error *err)
{
    const size_t ndim = tensor->ndim;
    if (ndim > ST_MAX_DIMS) {
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                            "tensor has %zu dimensions, more than the maximum of %d", ndim,
                            ST_MAX_DIMS);
    }
    unsigned bits = st_dtype_bits(tensor->dtype);
    if (bits == 0) {
        return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "unknown dtype");
    }
    const bool subbyte = (bits % 8) != 0;

    size_t consumed = 0, ellipses = 0, newaxes = 0;
    for (size_t i = 0; i < count; i++) {
        switch (indices[i].kind) {
        case ST_INDEX_INT:
        case ST_INDEX_SLICE:
            consumed++;
            break;
        case ST_INDEX_ELLIPSIS:
            ellipses++;
            break;
        case ST_INDEX_NEWAXIS:
            newaxes++;
            break;
        default:
            return st_error_set(err, ST_ERR_INVALID_ARGUMENT, 0, "unknown index kind %d",
                                (int)indices[i].kind);
        }
    }
    if (ellipses > 1) {
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                            "an index can only have a single ellipsis ('...')");
    }
    if (consumed > ndim) {
        return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                            "too many indices for tensor: tensor is %zu-dimensional, but %zu "
                            "were indexed", ndim, consumed);
    }
    for (size_t d = 0; d < ndim; d++) {
        if (tensor->shape[d] > (uint64_t)INT64_MAX) {
            return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                                "dimension %zu of size %llu is too large to index", d,
                                (unsigned long long)tensor->shape[d]);
        }
    }

    /* Source strides in bits, C order. For a non-empty tensor they are all
     * <= its size in bits (checked by the header validation, still checked
     * here); for an empty tensor an overflowing stride is replaced by 0. */
    int64_t sbits[ST_MAX_DIMS];
    bool empty_tensor = false;
    for (size_t d = 0; d < ndim; d++) {
        if (tensor->shape[d] == 0) {
            empty_tensor = true;
        }
    }
    {
        int64_t acc = (int64_t)bits;
        bool overflow = false;
        for (size_t d = ndim; d-- > 0;) {
            sbits[d] = overflow ? 0 : acc;
            int64_t next;
            if (!overflow && !mul_i64(acc, (int64_t)tensor->shape[d], &next)) {
                overflow = true;
            }
            if (!overflow) {
                acc = next;
            }
        }
        if (overflow && !empty_tensor) {
            return st_error_set(err, ST_ERR_VALIDATION_OVERFLOW, 0,
                                "overflow computing buffer size from shape and/or element type");
        }
    }

    out_dim od[ST_MAX_DIMS];
    size_t on = 0;
    int64_t off_bits = 0;
    bool overflow = false;
    bool last_by_int = false;
    uint64_t last_start = 0, last_count = 0;
    int64_t last_step = 1;
    size_t d = 0;   /* next source dim */

    for (size_t i = 0; i <= count; i++) {
        /* i == count: implicit trailing full slices (only if no Ellipsis). */
        size_t nfull = 0;
        const st_index *ix = NULL;
        if (i == count) {
            if (ellipses == 0) {
                nfull = ndim - d;
            }
        } else {
            ix = &indices[i];
            if (ix->kind == ST_INDEX_ELLIPSIS) {
                nfull = ndim - consumed;
                ix = NULL;
            }
        }
        for (size_t k = 0; k < nfull; k++, d++) {
            if (on >= ST_MAX_DIMS) {
                goto too_many_dims;
            }
            od[on].count = tensor->shape[d];
            od[on].step_bits = sbits[d];
            od[on].is_last = (d == ndim - 1);
            if (od[on].is_last) {
                last_start = 0;
                last_count = tensor->shape[d];
                last_step = 1;
            }
            on++;
        }
        if (ix == NULL) {
            continue;
        }
        if (ix->kind == ST_INDEX_NEWAXIS) {
            if (on >= ST_MAX_DIMS) {
                goto too_many_dims;
            }
            od[on].count = 1;
            od[on].step_bits = 0;
            od[on].is_last = false;
            on++;
        } else if (ix->kind == ST_INDEX_INT) {
            int64_t len = (int64_t)tensor->shape[d];
            int64_t v = ix->value;
            int64_t w = v < 0 ? v + len : v;   /* no overflow: len >= 0 */
            if (w < 0 || w >= len) {
                return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                                    "Invalid index %lld for dimension %zu of size %lld",
                                    (long long)v, d, (long long)len);
            }
            int64_t t;
            if (!mul_i64(w, sbits[d], &t) || !add_i64(off_bits, t, &off_bits)) {
                overflow = true;
            }
            if (d == ndim - 1) {
                last_by_int = true;
            }
            d++;
        } else { /* slice */
            if (ix->has_step && ix->step == 0) {
                return st_error_set(err, ST_ERR_INVALID_SLICE, 0, "slice step cannot be zero");
            }
            if (on >= ST_MAX_DIMS) {
                goto too_many_dims;
            }
            int64_t start, step;
            uint64_t cnt;
            adjust_slice(ix, (int64_t)tensor->shape[d], &start, &step, &cnt);
            if (cnt > 0) {
                int64_t t;
                if (!mul_i64(start, sbits[d], &t) || !add_i64(off_bits, t, &off_bits)) {
                    overflow = true;
                }
            }
            od[on].count = cnt;
            if (cnt > 1) {
                if (!mul_i64(step, sbits[d], &od[on].step_bits)) {
                    overflow = true;
                }
            } else {
                od[on].step_bits = sbits[d];   /* never used to move */
            }
            od[on].is_last = (d == ndim - 1);
            if (od[on].is_last) {
                last_start = (uint64_t)(start < 0 ? 0 : start);
                last_count = cnt;
                last_step = step;
            }
            on++;
            d++;
        }
    }

    uint64_t nel = 1;
    bool has_zero = false;
    for (size_t k = 0; k < on; k++) {
        if (od[k].count == 0) {
            has_zero = true;
        }
    }
    if (has_zero) {
        nel = 0;
    } else {
        for (size_t k = 0; k < on; k++) {
            if (__builtin_mul_overflow(nel, od[k].count, &nel)) {
                overflow = true;
            }
        }
    }

    memset(out, 0, sizeof *out);
    out->ndim = on;
    out->nelements = nel;
    for (size_t k = 0; k < on; k++) {
        out->shape[k] = od[k].count;
    }

    if (nel == 0) {
        /* Empty: nothing is addressed. Report C-contiguous strides. */
        int64_t acc = subbyte ? 1 : (int64_t)(bits / 8);
        for (size_t k = on; k-- > 0;) {
            out->strides[k] = acc;
            uint64_t c = od[k].count ? od[k].count : 1;
            if (!mul_i64(acc, (int64_t)(c > (uint64_t)INT64_MAX ? 1 : c), &acc)) {
                acc = 0;
            }
        }
        out->offset = 0;
        out->span_offset = 0;
        out->span_len = 0;
        return ST_OK;
    }
    if (overflow) {
        return st_error_set(err, ST_ERR_VALIDATION_OVERFLOW, 0,
                            "overflow computing buffer size from shape and/or element type");
    }

    if (subbyte) {
        bool ok = !last_by_int && ndim > 0;
        if (ok && last_count > 1 && last_step != 1) {
            ok = false;
        }
        if (ok && ((last_start * bits) % 8 != 0 || (last_count * bits) % 8 != 0)) {
            ok = false;
        }
        if (ok && off_bits % 8 != 0) {
            ok = false;
        }
        for (size_t k = 0; ok && k < on; k++) {
            if (!od[k].is_last && od[k].count > 1 && od[k].step_bits % 8 != 0) {
                ok = false;
            }
        }
        if (!ok) {
            return st_error_set(err, ST_ERR_MISALIGNED_SLICE, 0, "%s", MISALIGNED_MSG);
        }
    }

    /* Byte strides and the span. */
    int64_t lo = 0, hi = 0;   /* relative to offset, in bytes, of run starts */
    for (size_t k = 0; k < on; k++) {
        int64_t sb;
        if (subbyte && od[k].is_last) {
            sb = 1;   /* elements; the run is accounted for below */
        } else if (od[k].step_bits % 8 == 0) {
            sb = od[k].step_bits / 8;
        } else {
            sb = 0;   /* only possible for count <= 1 (checked above) */
        }
        out->strides[k] = sb;
        if (subbyte && od[k].is_last) {
            continue;
        }
        int64_t ext;
        if (!mul_i64((int64_t)(od[k].count - 1), sb, &ext)) {
            return st_error_set(err, ST_ERR_VALIDATION_OVERFLOW, 0,
                                "overflow computing buffer size from shape and/or element type");
        }
        if (ext < 0) {
            lo += ext;
        } else {
            hi += ext;
        }
    }
    int64_t run;
    if (subbyte) {
        run = (int64_t)(last_count * bits / 8);
    } else {
        run = (int64_t)(bits / 8);
    }
    out->offset = off_bits / 8;
    out->span_offset = (uint64_t)(out->offset + lo);
    out->span_len = (uint64_t)(hi - lo + run);
    return ST_OK;

too_many_dims:
    return st_error_set(err, ST_ERR_INVALID_SLICE, 0,
                        "the selection would have more than %d dimensions", ST_MAX_DIMS);
}

st_code st_selection_bytes(const st_selection *sel, unsigned bits, st_selection *out,
                           st_error *err)
{
    *out = *sel;
    if (bits % 8 == 0 || sel->nelements == 0) {
        return ST_OK;
    }
    /* The innermost run comes from the tensor's last dim: the last output
     * dim with a non-zero stride (trailing newaxes have stride 0, and the
     * run has >= 2 elements so its stride is 1). */
    for (size_t k = sel->ndim; k-- > 0;) {
        if (sel->strides[k] != 0) {
            if (sel->strides[k] != 1 || (sel->shape[k] * bits) % 8 != 0) {
                break;
            }
            out->shape[k] = sel->shape[k] * bits / 8;
            out->nelements = sel->nelements / sel->shape[k] * out->shape[k];
            return ST_OK;
        }
    }
    return st_error_set(err, ST_ERR_MISALIGNED_SLICE, 0, "%s", MISALIGNED_MSG);
}

/* ---------------------------------------------------------------------- */

static void copy_strided(uint8_t *dst, const uint8_t *src, uint64_t n, int64_t stride,
                         size_t itemsize)
{
    switch (itemsize) {
    case 1:
        for (uint64_t i = 0; i < n; i++, src += stride) {
            *dst++ = *src;
        }
        return;
    case 2:
        for (uint64_t i = 0; i < n; i++, src += stride, dst += 2) {
            memcpy(dst, src, 2);
        }
        return;
    case 4:
        for (uint64_t i = 0; i < n; i++, src += stride, dst += 4) {
            memcpy(dst, src, 4);
        }
        return;
    case 8:
        for (uint64_t i = 0; i < n; i++, src += stride, dst += 8) {
            memcpy(dst, src, 8);
        }
        return;
    default:
        for (uint64_t i = 0; i < n; i++, src += stride, dst += itemsize) {
            memcpy(dst, src, itemsize);
        }
        return;
    }
}

/* Drops size-1 dims and merges dims contiguous with the next one; returns
 * the number of dims left (0: a single element). */
static size_t normalize_runs(const st_selection *sel, uint64_t *shape, int64_t *strides)
{
    size_t n = 0, m = 0;
    for (size_t k = 0; k < sel->ndim; k++) {
        if (sel->shape[k] == 1) {
            continue;
        }
        shape[n] = sel->shape[k];
        strides[n] = sel->strides[k];
        n++;
    }
    for (size_t k = 0; k < n; k++) {
        if (m > 0 && strides[m - 1] == (int64_t)shape[k] * strides[k]) {
            shape[m - 1] *= shape[k];
            strides[m - 1] = strides[k];
        } else {
            shape[m] = shape[k];
            strides[m] = strides[k];
            m++;
        }
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
        if (idx[k] < shape[k]) {
            return step;
        }
        step -= (int64_t)shape[k] * strides[k];
        idx[k] = 0;
    }
    *done = true;
    return step;
}

void st_selection_gather(const st_selection *sel, size_t itemsize, const uint8_t *src,
                         uint8_t *dst)
{
    uint64_t shape[ST_MAX_DIMS], idx[ST_MAX_DIMS] = {0};
    int64_t strides[ST_MAX_DIMS];
    bool done = false;
    if (sel->nelements == 0 || itemsize == 0) {
        return;
    }
    size_t m = normalize_runs(sel, shape, strides);
    const uint8_t *p = src + sel->offset;
    if (m == 0) {
        memcpy(dst, p, itemsize);
        return;
    }
    const uint64_t inner_n = shape[m - 1];
    const int64_t inner_s = strides[m - 1];
    const size_t run_bytes = (size_t)inner_n * itemsize;
    while (!done) {
        if (inner_s == (int64_t)itemsize)
            memcpy(dst, p, run_bytes);
        else
            copy_strided(dst, p, inner_n, inner_s, itemsize);
        dst += run_bytes;
        p += next_position(idx, shape, strides, m - 1, &done);
    }
}

/* Runs at least this long are read straight into place; shorter ones come
 * from one read of the span around them, unless that span is mostly waste. */
#define ST_DIRECT_RUN_MIN ((size_t)64 << 10)
#define ST_SPAN_WASTE_MAX 64

st_code st_file_read_selection(const st_file *file, uint64_t tensor_offset,
                               const st_selection *sel, size_t itemsize, uint8_t *dst,
                               st_error *err)
{
    uint64_t shape[ST_MAX_DIMS], idx[ST_MAX_DIMS] = {0};
    int64_t strides[ST_MAX_DIMS];
    uint64_t selected = sel->nelements * itemsize;
    st_code rc = ST_OK;
    bool done = false;

    if (selected == 0) {
        return ST_OK;
    }
    size_t m = normalize_runs(sel, shape, strides);
    bool inner_contiguous = m == 0 || strides[m - 1] == (int64_t)itemsize;
    bool sparse = sel->span_len / selected > ST_SPAN_WASTE_MAX;
    size_t run = m == 0 ? itemsize : (size_t)shape[m - 1] * itemsize;
    if (inner_contiguous ? (m <= 1 || run >= ST_DIRECT_RUN_MIN || sparse) : sparse) {
        /* Runs read into place, only the selected bytes: whole rows when the
         * innermost dim is contiguous, else single elements (a sparse
         * selection, where reading the span would be mostly waste). */
        size_t outer = inner_contiguous ? (m == 0 ? 0 : m - 1) : m;
        int64_t at = sel->offset;
        if (!inner_contiguous)
            run = itemsize;
        while (!done && rc == ST_OK) {
            rc = st_file_read(file, tensor_offset + (uint64_t)at, dst, run, err);
            dst += run;
            at += next_position(idx, shape, strides, outer, &done);
        }
        return rc;
    }
    uint8_t *span = st_malloc((size_t)sel->span_len);
    if (span == NULL) {
        return st_error_set(err, ST_ERR_NOMEM, 0, "out of memory");
    }
    rc = st_file_read(file, tensor_offset + sel->span_offset, span, (size_t)sel->span_len, err);
    if (rc == ST_OK) {
        st_selection local = *sel;
        local.offset -= (int64_t)sel->span_offset;
        st_selection_gather(&local, itemsize, span, dst);
    }
    st_free(span);
    return rc;
}
