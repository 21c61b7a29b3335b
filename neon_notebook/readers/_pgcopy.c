/* PostgreSQL's binary COPY format -> Arrow column buffers.
 *
 * decode(data, codes, allocate) takes a block of whole rows (CopyData payloads
 * laid end to end; the stream's header and trailer may be included) and one
 * code per column, and returns (rows, [(validity, offsets, values), ...]):
 * buffers from allocate(nbytes) (pyarrow's, from the reader's memory pool)
 * laid out as Arrow wants them.
 *
 * Codes (the wire format each type's send function writes; defined, with the
 * types that use them, in _registry.py, which readers/_decode.py checks against
 * CODES and VIEW_CODES exported here):
 *   '?' bool            -> bitmap              '2' '4' '8' int/float/oid/time -> native endian
 *   'D' date            -> date32 (days since 1970; +-infinity -> INT32_MAX/MIN)
 *   'T' timestamp[tz]   -> int64 us since 1970 (+-infinity -> INT64_MAX/MIN+1)
 *   'I' interval        -> month_day_nano (months, days, us * 1000)
 *   's' text-like       -> utf8 (offsets + bytes)   'y' bytea -> binary
 *   'j' jsonb           -> utf8 (version byte dropped)
 *   'u' uuid            -> utf8, canonical lowercase text
 *   'n' numeric         -> utf8, exactly as numeric_out prints it
 *   'V' pgvector vector -> list<float32>: offsets (in elements) + float32 values
 *   'N' numeric         -> decimal128 at the column's scale (from params);
 *                          a block holding NaN or +-Infinity gets 'n' instead,
 *                          and a value decimal128 can't hold raises DecimalOverflow
 *
 * params (optional, one byte per column): the scale of an 'N' column; 1 asks
 * for Arrow's view layout (string_view/binary_view, which polars takes without
 * a copy) instead of offsets for the variable-length codes.
 *
 * receive(pgconn_ptr, buffer, max_rows, max_bytes) is the reading loop: it
 * appends CopyData messages to a RowBuffer with libpq's PQgetCopyData (the
 * libpq psycopg uses, bound once with bind()), without the GIL, until the
 * buffer is full, nothing is buffered, or the COPY ends.
 *
 * Two passes over the block: the first checks the framing and sizes the
 * buffers, the second fills them.  Both run without the GIL, so the thread
 * reading the socket keeps going while a block is decoded.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define POSTGRES_EPOCH_DAYS 10957                  /* 2000-01-01 - 1970-01-01 */
#define POSTGRES_EPOCH_US (10957LL * 86400000000LL)
#define MAX_COLUMNS 1600                           /* PostgreSQL's own limit */

static const char SIGNATURE[11] = "PGCOPY\n\377\r\n";

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t rd64(const unsigned char *p) { return ((uint64_t)rd32(p) << 32) | rd32(p + 4); }

typedef struct {
    char code;
    int scale;            /* 'N' only */
    int special;          /* 'N' only: NaN or +-Infinity seen, the block becomes 'n' */
    int views;            /* variable-length codes: string_view layout instead of offsets */
    int64_t nulls;
    int64_t bytes;        /* value bytes for variable-length codes (an upper bound for 'n') */
    unsigned char *validity, *offsets, *values;  /* offsets holds the views in view layout */
    int64_t pos;          /* fill position in values (variable-length codes) */
} Col;

enum { OK = 0, E_FRAME, E_WIDTH, E_TS_RANGE, E_IV_RANGE, E_TOO_BIG, E_JSONB, E_NUMERIC, E_DECIMAL, E_VECTOR };

static const char *MESSAGES[] = {
    "",
    "malformed binary COPY data",
    "a binary COPY value has an unexpected width",
    "a timestamp is beyond Arrow's microsecond range",
    "an interval's time part exceeds Arrow's nanosecond range (\xc2\xb1" "292 years)",
    "a block holds more than 2 GiB of one column's values",
    "unknown jsonb binary version",
    "malformed numeric value",
    "a numeric value does not fit its column's decimal128",
    "malformed vector value",
};

static PyObject *DecimalOverflow;

static int fixed_width(char code) {
    switch (code) {
    case '?': return 1;
    case '2': return 2;
    case '4': case 'D': return 4;
    case '8': case 'T': return 8;
    case 'I': case 'u': case 'N': return 16;
    default: return 0;
    }
}

/* Characters numeric_out prints for a value (an upper bound is fine). */
static int numeric_text_bound(const unsigned char *p, int32_t len, int64_t *out) {
    if (len < 8) return E_NUMERIC;
    int ndigits = (int16_t)rd16(p), weight = (int16_t)rd16(p + 2);
    uint16_t sign = rd16(p + 4), dscale = rd16(p + 6);
    if (ndigits < 0 || len != 8 + 2 * ndigits) return E_NUMERIC;
    if (sign == 0xC000 || sign == 0xD000 || sign == 0xF000) { *out = 9; return OK; }
    if (sign != 0x0000 && sign != 0x4000) return E_NUMERIC;  /* as numeric_recv checks */
    *out = 1 + (weight >= 0 ? 4 * ((int64_t)weight + 1) : 1) + (dscale ? 1 + (int64_t)dscale : 0);
    return OK;
}

/* numeric_out's text of one binary numeric (PostgreSQL's get_str_from_var). */
static int64_t numeric_text(const unsigned char *p, unsigned char *out) {
    int ndigits = (int16_t)rd16(p), weight = (int16_t)rd16(p + 2);
    uint16_t sign = rd16(p + 4);
    int dscale = rd16(p + 6);
    const unsigned char *digits = p + 8;
    unsigned char *o = out;
    if (sign == 0xC000) { memcpy(o, "NaN", 3); return 3; }
    if (sign == 0xD000) { memcpy(o, "Infinity", 8); return 8; }
    if (sign == 0xF000) { memcpy(o, "-Infinity", 9); return 9; }
    if (sign == 0x4000) *o++ = '-';
    if (weight < 0) {
        *o++ = '0';
    } else {
        for (int d = 0; d <= weight; d++) {
            int dig = d < ndigits ? rd16(digits + 2 * d) : 0;
            int q1 = dig / 1000, q2 = dig / 100 % 10, q3 = dig / 10 % 10, q4 = dig % 10;
            if (d == 0) {  /* the first group without leading zeros */
                if (q1) *o++ = '0' + q1;
                if (q1 || q2) *o++ = '0' + q2;
                if (q1 || q2 || q3) *o++ = '0' + q3;
                *o++ = '0' + q4;
            } else {
                *o++ = '0' + q1; *o++ = '0' + q2; *o++ = '0' + q3; *o++ = '0' + q4;
            }
        }
    }
    if (dscale > 0) {
        *o++ = '.';
        unsigned char *end = o + dscale;
        for (int d = weight + 1; o < end; d++) {
            int dig = (d >= 0 && d < ndigits) ? rd16(digits + 2 * d) : 0;
            unsigned char group[4] = {'0' + dig / 1000, '0' + dig / 100 % 10, '0' + dig / 10 % 10,
                                      '0' + dig % 10};
            for (int k = 0; k < 4 && o < end; k++) *o++ = group[k];
        }
    }
    return o - out;
}

#ifdef __SIZEOF_INT128__
typedef __int128 i128;
#define I128_MAX ((i128)(((unsigned __int128)1 << 127) - 1))

/* A binary numeric as an integer scaled by 10^scale; E_DECIMAL if it doesn't fit. */
static int numeric_decimal(const unsigned char *p, int scale, i128 *out) {
    int ndigits = (int16_t)rd16(p), weight = (int16_t)rd16(p + 2);
    uint16_t sign = rd16(p + 4);
    i128 acc = 0;
    for (int i = 0; i < ndigits; i++) {
        if (acc > (I128_MAX - 9999) / 10000) return E_DECIMAL;
        acc = acc * 10000 + rd16(p + 8 + 2 * i);
    }
    /* The last group's decimal exponent, then to the column's scale. */
    int shift = acc ? 4 * (weight - ndigits + 1) + scale : 0;
    for (; shift > 0; shift--) {
        if (acc > I128_MAX / 10) return E_DECIMAL;
        acc *= 10;
    }
    for (; shift < 0; shift++) {
        if (acc % 10) return E_DECIMAL;  /* digits past the scale: never rounded */
        acc /= 10;
    }
    *out = sign == 0x4000 ? -acc : acc;
    return OK;
}
#endif

/* Skip the stream's header if the block starts with it. */
static int skip_header(const unsigned char **pp, const unsigned char *end) {
    const unsigned char *p = *pp;
    if (end - p < 11 || memcmp(p, SIGNATURE, 11) != 0) return OK;
    if (end - p < 19) return E_FRAME;
    uint32_t ext = rd32(p + 15);
    if ((uint64_t)(end - p - 19) < ext) return E_FRAME;
    *pp = p + 19 + ext;
    return OK;
}

/* Pass 1: check the framing, count rows and NULLs, size the values. */
static int scan(const unsigned char *p, const unsigned char *end, Col *cols, int ncols,
                int64_t *rows_out, int *trailer) {
    int64_t rows = 0;
    int rc = skip_header(&p, end);
    if (rc) return rc;
    *trailer = 0;
    while (p < end) {
        if (end - p < 2) return E_FRAME;
        int16_t nf = (int16_t)rd16(p);
        p += 2;
        if (nf == -1) { *trailer = 1; if (p != end) return E_FRAME; break; }
        if (nf != ncols) return E_FRAME;
        for (int c = 0; c < ncols; c++) {
            Col *col = &cols[c];
            if (end - p < 4) return E_FRAME;
            int32_t len = (int32_t)rd32(p);
            p += 4;
            if (len == -1) { col->nulls++; continue; }
            if (len < 0 || end - p < len) return E_FRAME;
            int w = fixed_width(col->code);
            if (col->code == 'N') {
                int64_t bound;
                if ((rc = numeric_text_bound(p, len, &bound))) return rc;
                col->bytes += bound;  /* in case the block turns out to need text */
                uint16_t sign = rd16(p + 4);
                if (sign == 0xC000 || sign == 0xD000 || sign == 0xF000) col->special = 1;
            } else if (w) {
                if (len != w) return E_WIDTH;
                if (col->code == 'u') col->bytes += 36;
            } else if (col->code == 'n') {
                int64_t bound;
                if ((rc = numeric_text_bound(p, len, &bound))) return rc;
                col->bytes += bound;
            } else if (col->code == 'V') {
                /* int16 dimensions, int16 unused, float4 x dimensions */
                if (len < 4 || len != 4 + 4 * (int32_t)rd16(p)) return E_VECTOR;
                col->bytes += len - 4;
            } else {
                /* view layout: short values live in their views, but each is
                 * written at values + pos before it moves: keep 12 spare bytes */
                if (col->code == 'j' && len < 1) return E_JSONB;
                int32_t n = col->code == 'j' ? len - 1 : len;
                col->bytes += !col->views || n > 12 ? n : 0;
            }
            p += len;
        }
        rows++;
    }
    *rows_out = rows;
    for (int c = 0; c < ncols; c++) {
        if (cols[c].special) { cols[c].code = 'n'; cols[c].views = 0; }
        if (cols[c].views) cols[c].bytes += 12;
        if (cols[c].code != 'N' && cols[c].bytes > INT32_MAX) return E_TOO_BIG;
    }
    return OK;
}

static const char HEXDIGITS[] = "0123456789abcdef";
#ifdef __SIZEOF_INT128__
static const char CODES[] = "?248DTIsyjunVN";
#else
static const char CODES[] = "?248DTIsyjunV";
#endif
/* The variable-length codes that take params 1 for Arrow's view layout. */
static const char VIEW_CODES[] = "syju";

/* Finish row r's value of a variable-length column, written at values + pos.
 * Offsets layout: the next offset.  View layout (Arrow's string_view): a
 * 16-byte view holding the length and either the value (up to 12 bytes, moved
 * out of values) or its first 4 bytes and its offset in values. */
static inline void put(Col *col, int64_t r, int32_t len) {
    if (!col->views) {
        col->pos += len;
        ((int32_t *)col->offsets)[r + 1] = (int32_t)col->pos;
        return;
    }
    unsigned char *view = col->offsets + 16 * r, *value = col->values + col->pos;
    memset(view, 0, 16);
    memcpy(view, &len, 4);
    if (len <= 12) {
        memcpy(view + 4, value, len);
    } else {
        int32_t offset = (int32_t)col->pos;
        memcpy(view + 4, value, 4);
        memcpy(view + 12, &offset, 4);  /* buffer index 0 at view + 8 */
        col->pos += len;
    }
}

/* Pass 2: fill the buffers. */
static int fill(const unsigned char *p, const unsigned char *end, Col *cols, int ncols, int64_t rows) {
    int rc;
    skip_header(&p, end);
    for (int64_t r = 0; r < rows; r++) {
        p += 2;
        for (int c = 0; c < ncols; c++) {
            Col *col = &cols[c];
            int32_t len = (int32_t)rd32(p);
            p += 4;
            int null = len == -1;
            if (col->validity && !null) col->validity[r >> 3] |= (unsigned char)(1u << (r & 7));
            unsigned char *v = col->values;
            switch (col->code) {
            case '?':
                if (!null && *p) v[r >> 3] |= (unsigned char)(1u << (r & 7));
                break;
            case '2': { uint16_t x = null ? 0 : rd16(p); memcpy(v + 2 * r, &x, 2); break; }
            case '4': { uint32_t x = null ? 0 : rd32(p); memcpy(v + 4 * r, &x, 4); break; }
            case '8': { uint64_t x = null ? 0 : rd64(p); memcpy(v + 8 * r, &x, 8); break; }
            case 'D': {
                int32_t x = null ? 0 : (int32_t)rd32(p);
                if (x != INT32_MAX && x != INT32_MIN) {
                    if (x > INT32_MAX - POSTGRES_EPOCH_DAYS) return E_FRAME;  /* past PostgreSQL's own range */
                    x += POSTGRES_EPOCH_DAYS;
                }
                memcpy(v + 4 * r, &x, 4);
                break;
            }
            case 'T': {
                int64_t x = null ? 0 : (int64_t)rd64(p);
                if (x == INT64_MIN) x = INT64_MIN + 1;
                else if (x != INT64_MAX) {
                    if (x > INT64_MAX - POSTGRES_EPOCH_US - 1) return E_TS_RANGE;
                    x += POSTGRES_EPOCH_US;
                    if (x <= INT64_MIN + 1) return E_TS_RANGE;
                }
                memcpy(v + 8 * r, &x, 8);
                break;
            }
            case 'I': {
                int64_t us = 0, ns;
                int32_t days = 0, months = 0;
                if (!null) {
                    us = (int64_t)rd64(p);
                    days = (int32_t)rd32(p + 8);
                    months = (int32_t)rd32(p + 12);
                }
                if (us > INT64_MAX / 1000 || us < -(INT64_MAX / 1000)) return E_IV_RANGE;
                ns = us * 1000;
                memcpy(v + 16 * r, &months, 4);
                memcpy(v + 16 * r + 4, &days, 4);
                memcpy(v + 16 * r + 8, &ns, 8);
                break;
            }
#ifdef __SIZEOF_INT128__
            case 'N': {
                i128 x = 0;
                if (!null && (rc = numeric_decimal(p, col->scale, &x))) return rc;
                memcpy(v + 16 * r, &x, 16);  /* little-endian hosts, as Arrow's decimal128 */
                break;
            }
#endif
            case 'u':
                if (!null) {
                    unsigned char *o = v + col->pos;
                    for (int k = 0; k < 16; k++) {
                        if (k == 4 || k == 6 || k == 8 || k == 10) *o++ = '-';
                        *o++ = HEXDIGITS[p[k] >> 4];
                        *o++ = HEXDIGITS[p[k] & 15];
                    }
                }
                put(col, r, null ? 0 : 36);
                break;
            case 'n':
                put(col, r, null ? 0 : numeric_text(p, v + col->pos));
                break;
            case 'V':
                if (!null) {
                    for (int32_t k = 4; k < len; k += 4) {
                        uint32_t x = rd32(p + k);
                        memcpy(v + col->pos + k - 4, &x, 4);
                    }
                    col->pos += len - 4;
                }
                ((int32_t *)col->offsets)[r + 1] = (int32_t)(col->pos / 4);
                break;
            case 'j':
                if (!null) {
                    if (len < 1 || p[0] != 1) return E_JSONB;
                    memcpy(v + col->pos, p + 1, len - 1);
                }
                put(col, r, null ? 0 : len - 1);
                break;
            default: /* 's', 'y' */
                if (!null) memcpy(v + col->pos, p, len);
                put(col, r, null ? 0 : len);
                break;
            }
            if (!null) p += len;
        }
    }
    return OK;
}

/* A writable buffer of n bytes from allocate(n), zeroed if asked; its memory in *view. */
static PyObject *new_buffer(PyObject *allocate, Py_ssize_t n, int zero, Py_buffer *view) {
    PyObject *b = PyObject_CallFunction(allocate, "n", n);
    if (!b) return NULL;
    if (PyObject_GetBuffer(b, view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) { Py_DECREF(b); return NULL; }
    if (view->len < n) {
        PyBuffer_Release(view);
        Py_DECREF(b);
        PyErr_SetString(PyExc_ValueError, "allocate() returned a buffer too small");
        return NULL;
    }
    if (zero && n) memset(view->buf, 0, n);
    return b;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer data, codes, params = {0};
    PyObject *allocate;
    if (!PyArg_ParseTuple(args, "y*y*O|y*", &data, &codes, &allocate, &params)) return NULL;
    PyObject *result = NULL, *list = NULL;
    Col *cols = NULL;
    Py_buffer *views = NULL;  /* three per column: validity, offsets, values */
    int nviews = 0;
    int ncols = (int)codes.len;
    if (ncols < 1 || ncols > MAX_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "between 1 and 1600 column codes expected");
        goto done;
    }
    cols = PyMem_Calloc(ncols, sizeof(Col));
    views = PyMem_Calloc(3 * (size_t)ncols, sizeof(Py_buffer));
    if (!cols || !views) { PyErr_NoMemory(); goto done; }
    for (int c = 0; c < ncols; c++) {
        cols[c].code = ((const char *)codes.buf)[c];
        if (!strchr(CODES, cols[c].code)) {
            PyErr_Format(PyExc_ValueError, "unknown column code %c", cols[c].code);
            goto done;
        }
        int param = params.len == ncols ? ((const unsigned char *)params.buf)[c] : 0;
        if (params.obj && params.len != ncols) {
            PyErr_SetString(PyExc_ValueError, "params needs one byte per column");
            goto done;
        }
        if (cols[c].code == 'N') {
            if (!params.obj || param > 38) {
                PyErr_SetString(PyExc_ValueError, "an 'N' column needs its scale, 0 to 38, in params");
                goto done;
            }
            cols[c].scale = param;
        } else if (strchr(VIEW_CODES, cols[c].code)) {
            cols[c].views = param == 1;
        }
    }
    const unsigned char *start = data.buf, *end = start + data.len;
    int64_t rows = 0;
    int trailer = 0, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = scan(start, end, cols, ncols, &rows, &trailer);
    Py_END_ALLOW_THREADS
    if (rc) { PyErr_SetString(PyExc_ValueError, MESSAGES[rc]); goto done; }

    list = PyList_New(ncols);
    if (!list) goto done;
    for (int c = 0; c < ncols; c++) {
        Col *col = &cols[c];
        int w = fixed_width(col->code);
        PyObject *bufs[3] = {Py_None, Py_None, NULL};
        if (col->nulls) {
            if (!(bufs[0] = new_buffer(allocate, (rows + 7) / 8, 1, &views[nviews]))) goto column_failed;
            col->validity = views[nviews++].buf;
        }
        if (col->code == '?') {
            bufs[2] = new_buffer(allocate, (rows + 7) / 8, 1, &views[nviews]);
        } else if (w && col->code != 'u') {  /* 'N' too: 16 bytes a value */
            bufs[2] = new_buffer(allocate, w * rows, 0, &views[nviews]);
        } else {
            Py_ssize_t size = col->views ? 16 * rows : 4 * (rows + 1);
            if (!(bufs[1] = new_buffer(allocate, size, 0, &views[nviews]))) goto column_failed;
            col->offsets = views[nviews++].buf;
            if (!col->views) memset(col->offsets, 0, 4);
            bufs[2] = new_buffer(allocate, col->bytes, 0, &views[nviews]);
        }
        if (!bufs[2]) goto column_failed;
        col->values = views[nviews++].buf;
        for (int k = 0; k < 2; k++) if (bufs[k] == Py_None) Py_INCREF(Py_None);
        PyList_SET_ITEM(list, c, Py_BuildValue("(NNN)", bufs[0], bufs[1], bufs[2]));
        continue;
    column_failed:
        for (int k = 0; k < 2; k++) if (bufs[k] != Py_None) Py_XDECREF(bufs[k]);
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = fill(start, end, cols, ncols, rows);
    Py_END_ALLOW_THREADS
    if (rc) {
        PyErr_SetString(rc == E_DECIMAL ? DecimalOverflow
                        : (rc == E_TS_RANGE || rc == E_IV_RANGE) ? PyExc_OverflowError
                        : PyExc_ValueError, MESSAGES[rc]);
        goto done;
    }
    {
        char used[MAX_COLUMNS];
        for (int c = 0; c < ncols; c++) used[c] = cols[c].code;
        result = Py_BuildValue("(LOy#)", (long long)rows, list, used, (Py_ssize_t)ncols);
    }

done:
    for (int k = 0; k < nviews; k++) PyBuffer_Release(&views[k]);
    Py_XDECREF(list);
    PyMem_Free(views);
    PyMem_Free(cols);
    PyBuffer_Release(&data);
    PyBuffer_Release(&codes);
    if (params.obj) PyBuffer_Release(&params);
    return result;
}

/* ---- the reading loop ---------------------------------------------------- */

typedef int (*getcopydata_fn)(void *conn, char **buffer, int async);
typedef void (*freemem_fn)(void *ptr);
static getcopydata_fn PQgetCopyData_ = NULL;
static freemem_fn PQfreemem_ = NULL;

enum { RECV_WAIT = 0, RECV_FULL = 1, RECV_DONE = 2, RECV_FAILED = 3 };

/* Whole CopyData messages laid end to end, in memory of its own (malloc). */
typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t len, cap;
    int exports;
} RowBuffer;

static void rowbuffer_dealloc(RowBuffer *self) {
    free(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int rowbuffer_getbuffer(RowBuffer *self, Py_buffer *view, int flags) {
    static char empty[1];
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->data ? self->data : empty, self->len, 1, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void rowbuffer_releasebuffer(RowBuffer *self, Py_buffer *view) {
    (void)view;
    self->exports--;
}

static Py_ssize_t rowbuffer_length(RowBuffer *self) { return self->len; }

static PyBufferProcs ROWBUFFER_AS_BUFFER = {(getbufferproc)rowbuffer_getbuffer,
                                           (releasebufferproc)rowbuffer_releasebuffer};
static PySequenceMethods ROWBUFFER_AS_SEQUENCE = {.sq_length = (lenfunc)rowbuffer_length};

static PyTypeObject RowBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "neon_notebook.readers._pgcopy.RowBuffer",
    .tp_doc = "CopyData messages received by receive(), laid end to end (read-only buffer).",
    .tp_basicsize = sizeof(RowBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)rowbuffer_dealloc,
    .tp_as_buffer = &ROWBUFFER_AS_BUFFER,
    .tp_as_sequence = &ROWBUFFER_AS_SEQUENCE,
};

static PyObject *bind(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long get, freemem;
    if (!PyArg_ParseTuple(args, "KK", &get, &freemem)) return NULL;
    if (!get || !freemem) {
        PyErr_SetString(PyExc_ValueError, "null function pointer");
        return NULL;
    }
    PQgetCopyData_ = (getcopydata_fn)(uintptr_t)get;
    PQfreemem_ = (freemem_fn)(uintptr_t)freemem;
    Py_RETURN_NONE;
}

/* Not a row: the binary format's trailer, alone or right after its header. */
static inline int is_trailer(const char *msg, int n) {
    return (n == 2 && (unsigned char)msg[0] == 0xff && (unsigned char)msg[1] == 0xff) ||
           (n == 21 && memcmp(msg, SIGNATURE, 11) == 0 && (unsigned char)msg[19] == 0xff &&
            (unsigned char)msg[20] == 0xff);
}

static PyObject *receive(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long ptr;
    RowBuffer *rb;
    long long max_rows;
    Py_ssize_t max_bytes;
    if (!PyArg_ParseTuple(args, "KO!Ln", &ptr, &RowBufferType, &rb, &max_rows, &max_bytes)) return NULL;
    if (!PQgetCopyData_) {
        PyErr_SetString(PyExc_RuntimeError, "bind() libpq first");
        return NULL;
    }
    if (!ptr) {
        PyErr_SetString(PyExc_ValueError, "the connection is closed");
        return NULL;
    }
    if (rb->exports) {
        PyErr_SetString(PyExc_BufferError, "the buffer is being decoded");
        return NULL;
    }
    void *conn = (void *)(uintptr_t)ptr;
    long long rows = 0;
    int status, oom = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        if (rows >= max_rows || rb->len >= max_bytes) { status = RECV_FULL; break; }
        char *msg = NULL;
        int n = PQgetCopyData_(conn, &msg, 1);
        if (n > 0) {
            if (rb->len + n > rb->cap) {
                Py_ssize_t cap = rb->cap ? 2 * rb->cap : (max_bytes < (1 << 20) ? max_bytes : (1 << 20)) + 65536;
                if (cap < rb->len + n) cap = rb->len + n;
                char *grown = realloc(rb->data, cap);
                if (!grown) { PQfreemem_(msg); oom = 1; status = RECV_FAILED; break; }
                rb->data = grown;
                rb->cap = cap;
            }
            memcpy(rb->data + rb->len, msg, n);
            rb->len += n;
            rows += !is_trailer(msg, n);
            PQfreemem_(msg);
        } else {
            status = n == 0 ? RECV_WAIT : n == -1 ? RECV_DONE : RECV_FAILED;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (oom) return PyErr_NoMemory();
    return Py_BuildValue("(iL)", status, rows);
}

static PyMethodDef METHODS[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, codes, allocate, params=b'') -> (rows, [(validity, offsets, values)], codes_used)\n\n"
     "Decode whole rows of PostgreSQL's binary COPY format into buffers from\n"
     "allocate(nbytes), which must return a writable buffer of at least nbytes.\n"
     "codes_used differs from codes where an 'N' column had to be read as 'n'."},
    {"bind", bind, METH_VARARGS,
     "bind(PQgetCopyData_address, PQfreemem_address)\n\n"
     "The libpq functions receive() calls: those of the libpq psycopg uses."},
    {"receive", receive, METH_VARARGS,
     "receive(pgconn_ptr, buffer, max_rows, max_bytes) -> (status, rows)\n\n"
     "Append CopyData messages to buffer until max_rows rows or max_bytes bytes are\n"
     "in it (status FULL), nothing more is buffered (WAIT: wait for the socket,\n"
     "consume input, call again), the COPY ends (DONE) or libpq fails (FAILED).\n"
     "rows counts the messages that are rows (not the binary format's trailer)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_pgcopy", NULL, -1, METHODS};

PyMODINIT_FUNC PyInit__pgcopy(void) {
    if (PyType_Ready(&RowBufferType) < 0) return NULL;
    PyObject *m = PyModule_Create(&MODULE);
    if (!m) return NULL;
    DecimalOverflow = PyErr_NewException("neon_notebook.readers._pgcopy.DecimalOverflow",
                                         PyExc_ArithmeticError, NULL);
    if (PyModule_AddObjectRef(m, "DecimalOverflow", DecimalOverflow) < 0 ||
        PyModule_AddStringConstant(m, "CODES", CODES) < 0 ||
        PyModule_AddStringConstant(m, "VIEW_CODES", VIEW_CODES) < 0 ||
        PyModule_AddObjectRef(m, "RowBuffer", (PyObject *)&RowBufferType) < 0 ||
        PyModule_AddIntConstant(m, "WAIT", RECV_WAIT) < 0 || PyModule_AddIntConstant(m, "FULL", RECV_FULL) < 0 ||
        PyModule_AddIntConstant(m, "DONE", RECV_DONE) < 0 ||
        PyModule_AddIntConstant(m, "FAILED", RECV_FAILED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
