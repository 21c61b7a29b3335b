/* Arrow column buffers -> PostgreSQL's binary COPY format (the mirror of
 * readers/_pgcopy.c).
 *
 * encode(columns, start, stop, max_bytes) -> (block, next)
 *   Encodes rows start.. of one record batch as binary COPY tuples (no
 *   header, no trailer: HEADER and TRAILER are module constants) into one
 *   bytes object of at most max_bytes (at least one row), and returns it with
 *   the first row it did not encode (stop when the batch is done).
 *
 * columns: one tuple per column, (op, param, offset, validity, offsets, values):
 *   op       2 bytes: the Arrow layout read (source) and the wire type written
 *            (target), below;
 *   param    the time unit of a temporal source (0 s, 1 ms, 2 us, 3 ns) or the
 *            scale of a decimal source;
 *   offset   the Arrow array's offset (in values; bits for bitmaps);
 *   validity the validity bitmap's buffer or None (no NULLs);
 *   offsets  the offsets buffer of a variable-length source, else None;
 *   values   the values buffer.
 *
 * Sources: '?' bitmap; 'b' 'h' 'i' 'l' int8..int64; 'B' 'H' 'I' 'L' uint8..uint64;
 *          'f' float32; 'd' float64; 's' int32 offsets + bytes; 'S' int64
 *          offsets + bytes; 'x' decimal128 (little-endian two's complement).
 * Targets: '?' bool; '2' '4' '8' int2/int4/int8 (range checked); 'f' float4;
 *          'F' float8; 'y' the bytes as they are (text, varchar, bytea);
 *          'D' date (from days since 1970); 'T' timestamp[tz] (from the unit
 *          since 1970); 't' time (from the unit since midnight); 'I' interval
 *          (from a duration in the unit); 'N' numeric (from an integer or a
 *          decimal at scale param; base-10000 digit groups, dscale = scale).
 * Temporal values are scaled to microseconds exactly: s and ms multiply, ns
 * divides only when the value is a whole number of microseconds (else an error).
 *
 * A value the target cannot hold raises EncodeError(column_index, row, reason)
 * and nothing is returned.  Two passes over the rows, both without the GIL:
 * the first checks every value and sizes the block exactly, the second fills
 * it, so the block is allocated once and never copied.
 *
 * Needs a compiler with __int128 (gcc, clang); without it the build fails and
 * the (optional) extension is simply absent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifndef __SIZEOF_INT128__
#error "the binary COPY encoder needs __int128"
#endif
typedef __int128 i128;
typedef unsigned __int128 u128;

#define POSTGRES_EPOCH_DAYS 10957                  /* 2000-01-01 - 1970-01-01 */
#define POSTGRES_EPOCH_US ((i128)10957 * 86400000000LL)
#define MAX_COLUMNS 1600                           /* PostgreSQL's own limit */

static const char HEADER[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
static const char TRAILER[2] = "\377\377";
static const char SOURCES[] = "?bhilBHILfdsSx";
static const char TARGETS[] = "?248fFyDTtIN";

typedef struct {
    char src, dst;
    int param;
    Py_ssize_t offset;
    const unsigned char *validity, *offsets, *values;
} Col;

typedef struct {
    int column;
    int64_t row;
    const char *reason;
} Failure;

static PyObject *EncodeError;

static inline void wr16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static inline void wr32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static inline void wr64(unsigned char *p, uint64_t v) { wr32(p, v >> 32); wr32(p + 4, (uint32_t)v); }

static inline int bit(const unsigned char *bits, int64_t i) { return (bits[i >> 3] >> (i & 7)) & 1; }

/* The integer at index i of an integer or decimal source. */
static inline i128 integer(const Col *c, int64_t i) {
    const unsigned char *v = c->values;
    switch (c->src) {
    case 'b': return ((const int8_t *)v)[i];
    case 'h': return ((const int16_t *)v)[i];
    case 'i': return ((const int32_t *)v)[i];
    case 'l': return ((const int64_t *)v)[i];
    case 'B': return ((const uint8_t *)v)[i];
    case 'H': return ((const uint16_t *)v)[i];
    case 'I': return ((const uint32_t *)v)[i];
    case 'L': return ((const uint64_t *)v)[i];
    default: {  /* 'x': decimal128, little-endian */
        uint64_t lo, hi;
        memcpy(&lo, v + 16 * i, 8);
        memcpy(&hi, v + 16 * i + 8, 8);
        return (i128)(((u128)hi << 64) | lo);
    }
    }
}

/* A temporal value in microseconds, or an error when a ns value is not whole us. */
static inline const char *micros(const Col *c, int64_t i, i128 *out) {
    i128 v = integer(c, i);
    switch (c->param) {
    case 0: *out = v * 1000000; return NULL;
    case 1: *out = v * 1000; return NULL;
    case 2: *out = v; return NULL;
    default:
        if (v % 1000) return "a nanosecond value that is not a whole number of microseconds "
                             "(PostgreSQL keeps microseconds; round it first, e.g. with "
                             "pyarrow.compute.floor_temporal or pandas' dt.floor('us'))";
        *out = v / 1000;
        return NULL;
    }
}

/* PostgreSQL's numeric of value/10^scale: base-10000 groups, most significant first. */
typedef struct {
    int ndigits, weight;
    uint16_t sign;
    uint16_t groups[16];
} Numeric;

static void to_numeric(i128 value, int scale, Numeric *n) {
    static const uint16_t POW10[4] = {1, 10, 100, 1000};
    u128 u = value < 0 ? -(u128)value : (u128)value;
    unsigned char d[48];  /* decimal digits, least significant first */
    int nd = 0;
    while (u >> 64) {
        uint64_t chunk = (uint64_t)(u % 10000000000000000000ULL);
        u /= 10000000000000000000ULL;
        for (int k = 0; k < 19; k++) { d[nd++] = chunk % 10; chunk /= 10; }
    }
    for (uint64_t w = (uint64_t)u; w; w /= 10) d[nd++] = w % 10;
    while (nd && !d[nd - 1]) nd--;
    n->sign = value < 0 ? 0x4000 : 0;
    if (!nd) { n->ndigits = 0; n->weight = 0; n->sign = 0; return; }
    /* group of decimal exponent e: floor(e / 4); e >= -38 so e + 40 > 0 */
    int gmin = (40 - scale) / 4 - 10, gtop = (nd - 1 - scale + 40) / 4 - 10;
    uint16_t g[16] = {0};  /* g[k] is group gmin + k */
    for (int i = 0; i < nd; i++) {
        int e = i - scale + 40;
        g[e / 4 - 10 - gmin] += d[i] * POW10[e % 4];
    }
    int lo = 0;
    while (!g[lo]) lo++;  /* trailing zero groups are not sent */
    n->weight = gtop;
    n->ndigits = gtop - gmin - lo + 1;
    for (int k = 0; k < n->ndigits; k++) n->groups[k] = g[gtop - gmin - k];
}

/* Bytes the value takes on the wire (after its length word), or -1 with f set. */
static int64_t value_size(const Col *c, int64_t i, Failure *f) {
    i128 v;
    const char *why = NULL;
    switch (c->dst) {
    case '?': return 1;
    case '2': case '4': case '8': {
        v = integer(c, i);
        i128 lo = c->dst == '2' ? INT16_MIN : c->dst == '4' ? INT32_MIN : INT64_MIN;
        i128 hi = c->dst == '2' ? INT16_MAX : c->dst == '4' ? INT32_MAX : INT64_MAX;
        if (v < lo || v > hi) {
            why = c->dst == '2' ? "out of range for smallint (int2)"
                : c->dst == '4' ? "out of range for integer (int4)" : "out of range for bigint (int8)";
            break;
        }
        return c->dst - '0';
    }
    case 'f': return 4;
    case 'F': return 8;
    case 'y': {
        int64_t len;
        if (c->src == 's') {
            const int32_t *o = (const int32_t *)c->offsets;
            len = (int64_t)o[i + 1] - o[i];
        } else {
            const int64_t *o = (const int64_t *)c->offsets;
            len = o[i + 1] - o[i];
        }
        if (len > 0x3fffffff) { why = "longer than PostgreSQL's 1 GB limit for one value"; break; }
        return len;
    }
    case 'D':
        v = integer(c, i) - POSTGRES_EPOCH_DAYS;
        if (v < INT32_MIN || v > INT32_MAX) { why = "a date out of PostgreSQL's range"; break; }
        return 4;
    case 'T': case 't': case 'I':
        if ((why = micros(c, i, &v))) break;
        if (c->dst == 'T') v -= POSTGRES_EPOCH_US;
        if (v < INT64_MIN || v > INT64_MAX) { why = "a time value out of PostgreSQL's range"; break; }
        return c->dst == 'I' ? 16 : 8;
    case 'N': {
        Numeric n;
        to_numeric(integer(c, i), c->src == 'x' ? c->param : 0, &n);
        return 8 + 2 * n.ndigits;
    }
    }
    f->row = i;
    f->reason = why;
    return -1;
}

/* Writes the value (its size was checked by value_size); returns the bytes written. */
static int64_t write_value(const Col *c, int64_t i, unsigned char *p) {
    i128 v = 0;
    switch (c->dst) {
    case '?':
        *p = bit(c->values, i);
        return 1;
    case '2': wr16(p, (uint16_t)integer(c, i)); return 2;
    case '4': wr32(p, (uint32_t)integer(c, i)); return 4;
    case '8': wr64(p, (uint64_t)integer(c, i)); return 8;
    case 'f': {
        uint32_t bits;
        memcpy(&bits, c->values + 4 * i, 4);
        wr32(p, bits);
        return 4;
    }
    case 'F': {
        double x = c->src == 'f' ? (double)((const float *)c->values)[i] : ((const double *)c->values)[i];
        uint64_t bits;
        memcpy(&bits, &x, 8);
        wr64(p, bits);
        return 8;
    }
    case 'y': {
        int64_t start, len;
        if (c->src == 's') {
            const int32_t *o = (const int32_t *)c->offsets;
            start = o[i]; len = (int64_t)o[i + 1] - o[i];
        } else {
            const int64_t *o = (const int64_t *)c->offsets;
            start = o[i]; len = o[i + 1] - o[i];
        }
        memcpy(p, c->values + start, len);
        return len;
    }
    case 'D': wr32(p, (uint32_t)(int32_t)(integer(c, i) - POSTGRES_EPOCH_DAYS)); return 4;
    case 'T': case 't':
        micros(c, i, &v);
        if (c->dst == 'T') v -= POSTGRES_EPOCH_US;
        wr64(p, (uint64_t)(int64_t)v);
        return 8;
    case 'I':  /* time (us), days, months: a duration is all time */
        micros(c, i, &v);
        wr64(p, (uint64_t)(int64_t)v);
        memset(p + 8, 0, 8);
        return 16;
    default: {  /* 'N' */
        Numeric n;
        int scale = c->src == 'x' ? c->param : 0;
        to_numeric(integer(c, i), scale, &n);
        wr16(p, n.ndigits); wr16(p + 2, (uint16_t)n.weight); wr16(p + 4, n.sign); wr16(p + 6, scale);
        for (int k = 0; k < n.ndigits; k++) wr16(p + 8 + 2 * k, n.groups[k]);
        return 8 + 2 * n.ndigits;
    }
    }
}

/* First pass: the rows [start, *next) that fit max_bytes (at least one) and their size. */
static int measure(const Col *cols, int ncols, int64_t start, int64_t stop, int64_t max_bytes,
                   int64_t *next, int64_t *size, Failure *f) {
    int64_t total = 0, r;
    for (r = start; r < stop; r++) {
        int64_t row = 2;
        for (int c = 0; c < ncols; c++) {
            const Col *col = &cols[c];
            int64_t i = col->offset + r;
            row += 4;
            if (col->validity && !bit(col->validity, i)) continue;
            int64_t n = value_size(col, i, f);
            if (n < 0) { f->column = c; f->row = r; return -1; }
            row += n;
        }
        if (r > start && total + row > max_bytes) break;
        total += row;
    }
    *next = r;
    *size = total;
    return 0;
}

/* Second pass: fills the block measure() sized. */
static void fill(const Col *cols, int ncols, int64_t start, int64_t next, unsigned char *p) {
    for (int64_t r = start; r < next; r++) {
        wr16(p, (uint16_t)ncols);
        p += 2;
        for (int c = 0; c < ncols; c++) {
            const Col *col = &cols[c];
            int64_t i = col->offset + r;
            if (col->validity && !bit(col->validity, i)) {
                wr32(p, 0xFFFFFFFFu);  /* -1: NULL */
                p += 4;
                continue;
            }
            int64_t n = write_value(col, i, p + 4);
            wr32(p, (uint32_t)n);
            p += 4 + n;
        }
    }
}

static int get_buffer(PyObject *obj, Py_buffer *view, const unsigned char **out) {
    if (obj == Py_None) { *out = NULL; return 0; }
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0) return -1;
    *out = view->buf;
    return 0;
}

static PyObject *encode(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *columns, *result = NULL;
    long long start, stop, max_bytes;
    if (!PyArg_ParseTuple(args, "OLLL", &columns, &start, &stop, &max_bytes)) return NULL;
    PyObject *seq = PySequence_Fast(columns, "columns must be a sequence of tuples");
    if (!seq) return NULL;
    Py_ssize_t ncols = PySequence_Fast_GET_SIZE(seq);
    Col *cols = NULL;
    Py_buffer *views = NULL;
    int nviews = 0;
    if (ncols < 1 || ncols > MAX_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "between 1 and 1600 columns expected");
        goto done;
    }
    if (start < 0 || stop < start || max_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "0 <= start <= stop and max_bytes >= 1 expected");
        goto done;
    }
    cols = PyMem_Calloc(ncols, sizeof(Col));
    views = PyMem_Calloc(3 * (size_t)ncols, sizeof(Py_buffer));
    if (!cols || !views) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t c = 0; c < ncols; c++) {
        const char *op;
        Py_ssize_t oplen;
        PyObject *validity, *offsets, *values;
        Col *col = &cols[c];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, c), "y#inOOO;a column is "
                              "(op, param, offset, validity, offsets, values)",
                              &op, &oplen, &col->param, &col->offset, &validity, &offsets, &values))
            goto done;
        if (oplen != 2 || !strchr(SOURCES, op[0]) || !strchr(TARGETS, op[1]) || !op[0] || !op[1]) {
            PyErr_Format(PyExc_ValueError, "column %zd: unknown op %R", c,
                         PySequence_Fast_GET_ITEM(PySequence_Fast_GET_ITEM(seq, c), 0));
            goto done;
        }
        col->src = op[0];
        col->dst = op[1];
        if ((col->src == 's' || col->src == 'S') != (offsets != Py_None) || values == Py_None ||
            col->offset < 0 || col->param < 0 || col->param > 38) {
            PyErr_Format(PyExc_ValueError, "column %zd: buffers or params do not match op", c);
            goto done;
        }
        if (get_buffer(validity, &views[nviews], &col->validity) < 0) goto done;
        if (col->validity) nviews++;
        if (get_buffer(offsets, &views[nviews], &col->offsets) < 0) goto done;
        if (col->offsets) nviews++;
        if (get_buffer(values, &views[nviews], &col->values) < 0) goto done;
        nviews++;
    }
    int64_t next = 0, size = 0;
    Failure f = {0, 0, NULL};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = measure(cols, (int)ncols, start, stop, max_bytes, &next, &size, &f);
    Py_END_ALLOW_THREADS
    if (rc) {
        PyObject *exc_args = Py_BuildValue("(iLs)", f.column, (long long)f.row, f.reason);
        if (exc_args) { PyErr_SetObject(EncodeError, exc_args); Py_DECREF(exc_args); }
        goto done;
    }
    PyObject *block = PyBytes_FromStringAndSize(NULL, size);
    if (!block) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(block);
    Py_BEGIN_ALLOW_THREADS
    fill(cols, (int)ncols, start, next, out);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(NL)", block, (long long)next);
done:
    for (int k = 0; k < nviews; k++) PyBuffer_Release(&views[k]);
    PyMem_Free(views);
    PyMem_Free(cols);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef METHODS[] = {
    {"encode", encode, METH_VARARGS,
     "encode(columns, start, stop, max_bytes) -> (block, next)\n\n"
     "Encode rows start.. (up to stop) of one record batch as binary COPY tuples,\n"
     "at most max_bytes (at least one row); next is the first row not encoded.\n"
     "columns: (op, param, offset, validity, offsets, values) per column."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {PyModuleDef_HEAD_INIT, "_pgcopy_encode", NULL, -1, METHODS};

PyMODINIT_FUNC PyInit__pgcopy_encode(void) {
    PyObject *m = PyModule_Create(&MODULE);
    if (!m) return NULL;
    EncodeError = PyErr_NewException("neon_notebook.writers._pgcopy_encode.EncodeError",
                                     PyExc_ValueError, NULL);
    PyObject *header = PyBytes_FromStringAndSize(HEADER, sizeof HEADER);
    PyObject *trailer = PyBytes_FromStringAndSize(TRAILER, sizeof TRAILER);
    int failed = !header || !trailer || PyModule_AddObjectRef(m, "HEADER", header) < 0 ||
                 PyModule_AddObjectRef(m, "TRAILER", trailer) < 0;
    Py_XDECREF(header);
    Py_XDECREF(trailer);
    if (failed || PyModule_AddObjectRef(m, "EncodeError", EncodeError) < 0 ||
        PyModule_AddStringConstant(m, "SOURCES", SOURCES) < 0 ||
        PyModule_AddStringConstant(m, "TARGETS", TARGETS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
