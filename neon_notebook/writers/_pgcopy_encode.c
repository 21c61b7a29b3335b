/* Arrow column buffers -> PostgreSQL's binary COPY format (the mirror of
 * readers/_pgcopy.c).
 *
 * encode(columns, start, stop, max_bytes) -> (block, next)
 *   Encodes rows start.. of one record batch as binary COPY tuples (no
 *   header, no trailer: HEADER and TRAILER are module constants) into one
 *   bytes object of at most max_bytes (at least one row), and returns it with
 *   the first row it did not encode (stop when the batch is done).
 *
 * columns: one tuple per column,
 *   (op, param, offset, validity, offsets, values[, children, names, extra]):
 *   op       2 bytes: the Arrow layout read (source) and what is written
 *            (target), below;
 *   param    the time unit of a temporal source (0 s, 1 ms, 2 us, 3 ns), the
 *            scale of a decimal source (or of an integer written as numeric:
 *            0), the size of a fixed-size list;
 *   offset   added to a logical index to find the value in the buffers (the
 *            Arrow array's offset; for a struct's fields, the field array's
 *            own offset, as pyarrow's StructArray.field gives it);
 *   validity the validity bitmap's buffer or None (no NULLs);
 *   offsets  the offsets buffer of a variable-length source, else None;
 *   values   the values buffer (a list view's sizes; b"" when there is none);
 *   children the child columns of a list (1), struct (one per field) or map
 *            (key, value: the entries' fields), as tuples of this form;
 *   names    a struct's field names as JSON object keys, '"name":';
 *   extra    the element type's OID of a PostgreSQL array ('A').
 *
 * Sources: '?' bitmap; 'b' 'h' 'i' 'l' int8..int64 (also date32, time32,
 *          decimal32 / date64, timestamp, time64, duration, decimal64);
 *          'B' 'H' 'I' 'L' uint8..uint64; 'e' float16; 'f' float32; 'd'
 *          float64; 's' int32 offsets + bytes; 'S' int64 offsets + bytes;
 *          'x' decimal128, 'X' decimal256 (little-endian two's complement);
 *          'w' 16-byte fixed-size binary (uuid); 'z' month_day_nano interval;
 *          '0' the null type (its validity, all zero, is given);
 *          '+' list, '=' large list, '#' fixed-size list (param: its size),
 *          '/' list view, '%' large list view; '{' struct; '<' map.
 * Targets: '?' bool; '2' '4' '8' int2/int4/int8 (range checked); 'f' float4;
 *          'F' float8; 'h' 'E' float16 -> float4 / float8; 'g' 'G' integer ->
 *          float4 / float8 (|v| <= 2^24 / 2^53: exact); 'y' the bytes as they
 *          are (text, varchar, bytea, json); 'D' date (from days since 1970);
 *          'M' date (from date64's ms, whole days only); 'T' timestamp[tz]
 *          (from the unit since 1970); 't' time (from the unit since
 *          midnight); 'I' interval (from a duration in the unit); 'R' interval
 *          (from month_day_nano); 'N' numeric (from an integer or a decimal up
 *          to 128 bits at scale param; base-10000 digit groups, dscale =
 *          scale); 'W' numeric from decimal256; 'U' uuid parsed from text as
 *          uuid_in does; 'u' uuid from 16 bytes; 'A' a PostgreSQL array of
 *          the child's target (a child that is itself an 'A' list is the next
 *          dimension: rectangular, no NULL or empty sub-lists, at most 6
 *          dimensions); 'J' jsonb (version byte 1, then the text of a string
 *          source as it is, or the JSON of any other source); 'j' JSON (json,
 *          or a value inside JSON).  Inside JSON: 'j' renders by source (bool,
 *          numbers, strings, lists, structs, maps); 'k' a date, 'K' a
 *          timestamp, 'Z' a timestamp in UTC ("+00:00"), 'q' a time: ISO
 *          strings; 'w' a uuid string; 'y' JSON text as it is; '0' null.
 *          JSON: strings escaped ('"', '\\', control characters), Unicode as
 *          UTF-8; floats as Python's repr writes them, the shortest text
 *          that reads back as the same value (Grisu2; NaN and infinities
 *          are errors); decimals with their scale.
 * Temporal values are scaled to microseconds exactly: s and ms multiply, ns
 * divides only when the value is a whole number of microseconds (else an error).
 *
 * A value the target cannot hold raises EncodeError(column_index, row, reason)
 * and nothing is returned.  Two passes over the rows, both without the GIL:
 * the first checks every value and sizes the block exactly, the second fills
 * it, so the block is allocated once and never copied.  Arrays and JSON are
 * rendered once, by the first pass, into a side buffer of their column
 * (bounded by the block) that the second copies from.
 *
 * Needs a compiler with __int128 (gcc, clang); without it the build fails and
 * the (optional) extension is simply absent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef __SIZEOF_INT128__
#error "the binary COPY encoder needs __int128"
#endif
typedef __int128 i128;
typedef unsigned __int128 u128;

#define POSTGRES_EPOCH_DAYS 10957                  /* 2000-01-01 - 1970-01-01 */
#define POSTGRES_EPOCH_US ((i128)10957 * 86400000000LL)
#define MAX_COLUMNS 1600                           /* PostgreSQL's own limit */
#define MAXDIM 6                                   /* PostgreSQL's arrays' limit */
#define MAX_DEPTH 64                               /* nesting of the column tuples */
#define MAX_VALUE 0x3fffffff                       /* PostgreSQL's 1 GB per value */

static const char HEADER[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
static const char TRAILER[2] = "\377\377";
static const char SOURCES[] = "?bhilBHILefdsSxXwz0+=#/%{<";
static const char TARGETS[] = "?248fFhEgGyDMTtIRNWUuAJjkKZqw0";
static const char LISTS[] = "+=#/%";

/* A growable buffer (malloc'd: filled without the GIL) the nested values of a
 * column are rendered into by the sizing pass, each after its length word, and
 * copied from by the filling pass.  A failed allocation sets failed. */
typedef struct {
    unsigned char *p;
    int64_t n, cap, pos;  /* pos: the filling pass's read position */
    int failed;
} Out;

typedef struct Col Col;
struct Col {
    char src, dst;
    int param;
    Py_ssize_t offset;
    const unsigned char *validity, *offsets, *values;
    int nchildren;
    Col *children;
    const char **names;       /* struct keys, '"name":' */
    Py_ssize_t *name_lens;
    long extra;               /* 'A': the element type's OID */
    Out *out;                 /* a rendered column's ('A', JSON) buffer, else NULL */
};

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
static inline int is_null(const Col *c, int64_t i) { return c->validity && !bit(c->validity, i); }
static inline int is_list(char src) { return src && strchr(LISTS, src) != NULL; }

/* Whether n more bytes fit at o->n (growing the buffer); 0 after a failed allocation. */
static int room(Out *o, int64_t n) {
    if (o->n + n <= o->cap) return 1;
    if (o->failed) return 0;
    int64_t cap = o->cap ? o->cap : 4096;
    while (cap < o->n + n) cap *= 2;
    unsigned char *grown = realloc(o->p, cap);
    if (!grown) { o->failed = 1; return 0; }
    o->p = grown;
    o->cap = cap;
    return 1;
}
static inline void put(Out *o, const void *s, int64_t n) {
    if (room(o, n)) memcpy(o->p + o->n, s, n);
    o->n += n;
}
static inline void put1(Out *o, unsigned char ch) {
    if (room(o, 1)) o->p[o->n] = ch;
    o->n++;
}
static inline void put32(Out *o, uint32_t v) {
    if (room(o, 4)) wr32(o->p + o->n, v);
    o->n += 4;
}
/* Sets the length word at `at` to the bytes written after it. */
static inline void patch(Out *o, int64_t at) {
    if (!o->failed) wr32(o->p + at, (uint32_t)(o->n - at - 4));
}

/* The integer at index i of an integer or decimal128 source. */
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

static const char NOT_WHOLE_US[] = "a nanosecond value that is not a whole number of microseconds "
    "(PostgreSQL keeps microseconds; round it first, e.g. with "
    "pyarrow.compute.floor_temporal or pandas' dt.floor('us'))";

/* A temporal value in microseconds, or an error when a ns value is not whole us. */
static inline const char *micros(const Col *c, int64_t i, i128 *out) {
    i128 v = integer(c, i);
    switch (c->param) {
    case 0: *out = v * 1000000; return NULL;
    case 1: *out = v * 1000; return NULL;
    case 2: *out = v; return NULL;
    default:
        if (v % 1000) return NOT_WHOLE_US;
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

/* -- wide decimals and decimal text ------------------------------------------------ */

/* The decimal digits (least significant first) of a magnitude in 64-bit limbs
 * (little-endian, destroyed); returns their count, without leading zeros. */
static int limb_digits(uint64_t *w, int nlimbs, unsigned char *d) {
    int nd = 0;
    for (;;) {
        int top = nlimbs - 1;
        while (top > 0 && !w[top]) top--;
        if (top == 0) break;
        u128 rem = 0;
        for (int k = top; k >= 0; k--) {
            u128 cur = (rem << 64) | w[k];
            w[k] = (uint64_t)(cur / 10000000000000000000ULL);
            rem = cur % 10000000000000000000ULL;
        }
        uint64_t chunk = (uint64_t)rem;
        for (int k = 0; k < 19; k++) { d[nd++] = chunk % 10; chunk /= 10; }
    }
    for (uint64_t v = w[0]; v; v /= 10) d[nd++] = v % 10;
    while (nd && !d[nd - 1]) nd--;
    return nd;
}

/* The digits and sign of a decimal256 value. */
static int wide_digits(const Col *c, int64_t i, unsigned char *d, int *negative) {
    uint64_t w[4];
    memcpy(w, c->values + 32 * i, 32);
    *negative = (int64_t)w[3] < 0;
    if (*negative) {  /* two's complement negation */
        int carry = 1;
        for (int k = 0; k < 4; k++) {
            w[k] = ~w[k] + carry;
            carry = carry && w[k] == 0;
        }
    }
    return limb_digits(w, 4, d);
}

/* The digits and sign of an integer or decimal128 value. */
static int narrow_digits(const Col *c, int64_t i, unsigned char *d, int *negative) {
    i128 v = integer(c, i);
    *negative = v < 0;
    u128 u = v < 0 ? -(u128)v : (u128)v;
    uint64_t w[2] = {(uint64_t)u, (uint64_t)(u >> 64)};
    return limb_digits(w, 2, d);
}

typedef struct {
    int ndigits, weight;
    uint16_t sign;
    uint16_t groups[24];
} WideNumeric;

/* numeric of (digits, least significant first) / 10^scale, scale <= 76. */
static void digits_numeric(const unsigned char *d, int nd, int scale, int negative, WideNumeric *n) {
    static const uint16_t POW10[4] = {1, 10, 100, 1000};
    n->sign = negative && nd ? 0x4000 : 0;
    if (!nd) { n->ndigits = 0; n->weight = 0; return; }
    /* group of decimal exponent e: floor(e / 4); e >= -76 so e + 80 >= 4 */
    int gmin = (80 - scale) / 4 - 20, gtop = (nd - 1 - scale + 80) / 4 - 20;
    uint16_t g[24] = {0};
    for (int i = 0; i < nd; i++) {
        int e = i - scale + 80;
        g[e / 4 - 20 - gmin] += d[i] * POW10[e % 4];
    }
    int lo = 0;
    while (!g[lo]) lo++;
    n->weight = gtop;
    n->ndigits = gtop - gmin - lo + 1;
    for (int k = 0; k < n->ndigits; k++) n->groups[k] = g[gtop - gmin - k];
}

/* The decimal text of (digits) / 10^scale: -123.45, 0.001, 0.00. */
static void digits_text(const unsigned char *d, int nd, int scale, int negative, Out *o) {
    if (negative && nd) put1(o, '-');
    if (nd <= scale) {
        put1(o, '0');
        if (scale) {
            put1(o, '.');
            for (int k = nd; k < scale; k++) put1(o, '0');
            for (int k = nd - 1; k >= 0; k--) put1(o, '0' + d[k]);
        }
        return;
    }
    for (int k = nd - 1; k >= 0; k--) {
        put1(o, '0' + d[k]);
        if (k == scale && scale) put1(o, '.');
    }
}

/* -- floats ------------------------------------------------------------------------ */

static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (!mant) bits = sign;
        else {  /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* The shortest decimal digits that read back as the same double (or float):
 * Grisu2 (F. Loitsch, "Printing floating-point numbers quickly and accurately
 * with integers", 2010), as nlohmann/json's to_chars does it.  Always exact;
 * the shortest but in about 1 case in 1,000 (then a digit or two more). */
typedef struct {
    uint64_t f;
    int e;
} DiyFp;

static inline DiyFp diy_mul(DiyFp x, DiyFp y) {  /* the product's upper 64 bits, rounded */
    u128 p = (u128)x.f * y.f;
    uint64_t h = (uint64_t)(p >> 64), l = (uint64_t)p;
    DiyFp r = {h + (l >> 63), x.e + y.e + 64};
    return r;
}

static inline DiyFp diy_normalize(DiyFp x) {
    int shift = __builtin_clzll(x.f);
    DiyFp r = {x.f << shift, x.e - shift};
    return r;
}

/* Normalized 10^k, k = -300, -292, ..., 324 (generated with exact rationals, rounded to nearest). */
static const struct { uint64_t f; int e, k; } POWERS[79] = {
    {0xAB70FE17C79AC6CAULL, -1060, -300}, {0xFF77B1FCBEBCDC4FULL, -1034, -292},
    {0xBE5691EF416BD60CULL, -1007, -284}, {0x8DD01FAD907FFC3CULL, -980, -276},
    {0xD3515C2831559A83ULL, -954, -268}, {0x9D71AC8FADA6C9B5ULL, -927, -260},
    {0xEA9C227723EE8BCBULL, -901, -252}, {0xAECC49914078536DULL, -874, -244},
    {0x823C12795DB6CE57ULL, -847, -236}, {0xC21094364DFB5637ULL, -821, -228},
    {0x9096EA6F3848984FULL, -794, -220}, {0xD77485CB25823AC7ULL, -768, -212},
    {0xA086CFCD97BF97F4ULL, -741, -204}, {0xEF340A98172AACE5ULL, -715, -196},
    {0xB23867FB2A35B28EULL, -688, -188}, {0x84C8D4DFD2C63F3BULL, -661, -180},
    {0xC5DD44271AD3CDBAULL, -635, -172}, {0x936B9FCEBB25C996ULL, -608, -164},
    {0xDBAC6C247D62A584ULL, -582, -156}, {0xA3AB66580D5FDAF6ULL, -555, -148},
    {0xF3E2F893DEC3F126ULL, -529, -140}, {0xB5B5ADA8AAFF80B8ULL, -502, -132},
    {0x87625F056C7C4A8BULL, -475, -124}, {0xC9BCFF6034C13053ULL, -449, -116},
    {0x964E858C91BA2655ULL, -422, -108}, {0xDFF9772470297EBDULL, -396, -100},
    {0xA6DFBD9FB8E5B88FULL, -369, -92}, {0xF8A95FCF88747D94ULL, -343, -84},
    {0xB94470938FA89BCFULL, -316, -76}, {0x8A08F0F8BF0F156BULL, -289, -68},
    {0xCDB02555653131B6ULL, -263, -60}, {0x993FE2C6D07B7FACULL, -236, -52},
    {0xE45C10C42A2B3B06ULL, -210, -44}, {0xAA242499697392D3ULL, -183, -36},
    {0xFD87B5F28300CA0EULL, -157, -28}, {0xBCE5086492111AEBULL, -130, -20},
    {0x8CBCCC096F5088CCULL, -103, -12}, {0xD1B71758E219652CULL, -77, -4},
    {0x9C40000000000000ULL, -50, 4}, {0xE8D4A51000000000ULL, -24, 12},
    {0xAD78EBC5AC620000ULL, 3, 20}, {0x813F3978F8940984ULL, 30, 28},
    {0xC097CE7BC90715B3ULL, 56, 36}, {0x8F7E32CE7BEA5C70ULL, 83, 44},
    {0xD5D238A4ABE98068ULL, 109, 52}, {0x9F4F2726179A2245ULL, 136, 60},
    {0xED63A231D4C4FB27ULL, 162, 68}, {0xB0DE65388CC8ADA8ULL, 189, 76},
    {0x83C7088E1AAB65DBULL, 216, 84}, {0xC45D1DF942711D9AULL, 242, 92},
    {0x924D692CA61BE758ULL, 269, 100}, {0xDA01EE641A708DEAULL, 295, 108},
    {0xA26DA3999AEF774AULL, 322, 116}, {0xF209787BB47D6B85ULL, 348, 124},
    {0xB454E4A179DD1877ULL, 375, 132}, {0x865B86925B9BC5C2ULL, 402, 140},
    {0xC83553C5C8965D3DULL, 428, 148}, {0x952AB45CFA97A0B3ULL, 455, 156},
    {0xDE469FBD99A05FE3ULL, 481, 164}, {0xA59BC234DB398C25ULL, 508, 172},
    {0xF6C69A72A3989F5CULL, 534, 180}, {0xB7DCBF5354E9BECEULL, 561, 188},
    {0x88FCF317F22241E2ULL, 588, 196}, {0xCC20CE9BD35C78A5ULL, 614, 204},
    {0x98165AF37B2153DFULL, 641, 212}, {0xE2A0B5DC971F303AULL, 667, 220},
    {0xA8D9D1535CE3B396ULL, 694, 228}, {0xFB9B7CD9A4A7443CULL, 720, 236},
    {0xBB764C4CA7A44410ULL, 747, 244}, {0x8BAB8EEFB6409C1AULL, 774, 252},
    {0xD01FEF10A657842CULL, 800, 260}, {0x9B10A4E5E9913129ULL, 827, 268},
    {0xE7109BFBA19C0C9DULL, 853, 276}, {0xAC2820D9623BF429ULL, 880, 284},
    {0x80444B5E7AA7CF85ULL, 907, 292}, {0xBF21E44003ACDD2DULL, 933, 300},
    {0x8E679C2F5E44FF8FULL, 960, 308}, {0xD433179D9C8CB841ULL, 986, 316},
    {0x9E19DB92B4E31BA9ULL, 1013, 324},
};

static void grisu2(DiyFp m_minus, DiyFp v, DiyFp m_plus, char *buf, int *len, int *k10) {
    /* a power c = 10^-k with alpha <= e(c * w) <= gamma (-60, -32) */
    int f = -60 - m_plus.e - 1;
    int k = (f * 78913) / (1 << 18) + (f > 0);
    int index = (300 + k + 7) / 8;
    DiyFp c = {POWERS[index].f, POWERS[index].e};
    DiyFp w = diy_mul(v, c), lo = diy_mul(m_minus, c), hi = diy_mul(m_plus, c);
    lo.f += 1;  /* the unsafe interval, narrowed by the multiplications' error */
    hi.f -= 1;
    int exponent = -POWERS[index].k;
    uint64_t delta = hi.f - lo.f, dist = hi.f - w.f;
    int one_e = -hi.e;
    uint64_t one_f = (uint64_t)1 << one_e;
    uint32_t p1 = (uint32_t)(hi.f >> one_e);
    uint64_t p2 = hi.f & (one_f - 1), rest, ten;
    uint32_t pow10 = 1000000000;
    int n = 10;
    while (n > 1 && p1 < pow10) { pow10 /= 10; n--; }
    *len = 0;
    for (;;) {  /* integral digits */
        if (n <= 0) break;
        uint32_t d = p1 / pow10;
        p1 %= pow10;
        buf[(*len)++] = (char)('0' + d);
        n--;
        rest = ((uint64_t)p1 << one_e) + p2;
        if (rest <= delta) {
            exponent += n;
            ten = (uint64_t)pow10 << one_e;
            goto round;
        }
        pow10 /= 10;
    }
    for (;;) {  /* fractional digits */
        p2 *= 10;
        buf[(*len)++] = (char)('0' + (p2 >> one_e));
        p2 &= one_f - 1;
        exponent--;
        delta *= 10;
        dist *= 10;
        if (p2 <= delta) break;
    }
    rest = p2;
    ten = one_f;
round:  /* the digits closest to w in the interval */
    while (rest < dist && delta - rest >= ten && (rest + ten < dist || dist - rest > rest + ten - dist)) {
        buf[*len - 1]--;
        rest += ten;
    }
    *k10 = exponent;
}

/* x (finite) as Python's repr writes a float: 0.1, 100.0, 1e-05, 1.5e+300; with
 * single, the shortest text of the float32 value. */
static int shortest(double x, int single, char *out) {
    char digits[24];
    int len, k10, n = 0;
    if (signbit(x)) { out[n++] = '-'; x = -x; }
    if (x == 0) { memcpy(out + n, "0.0", 3); return n + 3; }
    uint64_t F;
    int E, bias, precision = single ? 24 : 53;
    if (single) {
        float y = (float)x;
        uint32_t bits;
        memcpy(&bits, &y, 4);
        F = bits & 0x7fffff; E = bits >> 23; bias = 127 + 23;
    } else {
        uint64_t bits;
        memcpy(&bits, &x, 8);
        F = bits & 0xfffffffffffffULL; E = (int)(bits >> 52); bias = 1023 + 52;
    }
    uint64_t hidden = (uint64_t)1 << (precision - 1);
    DiyFp v = E ? (DiyFp){F + hidden, E - bias} : (DiyFp){F, 1 - bias};
    int closer = F == 0 && E > 1;  /* the lower neighbour is nearer (a power of two) */
    DiyFp plus = diy_normalize((DiyFp){2 * v.f + 1, v.e - 1});
    DiyFp minus = closer ? (DiyFp){4 * v.f - 1, v.e - 2} : (DiyFp){2 * v.f - 1, v.e - 1};
    minus.f <<= minus.e - plus.e;
    minus.e = plus.e;
    grisu2(minus, diy_normalize(v), plus, digits, &len, &k10);
    int point = len + k10;  /* digits[0] is at 10^(point - 1) */
    if (point > -4 && point <= 16) {
        if (point <= 0) {
            memcpy(out + n, "0.", 2); n += 2;
            for (int z = point; z < 0; z++) out[n++] = '0';
            memcpy(out + n, digits, len); n += len;
        } else if (point >= len) {
            memcpy(out + n, digits, len); n += len;
            for (int z = len; z < point; z++) out[n++] = '0';
            memcpy(out + n, ".0", 2); n += 2;
        } else {
            memcpy(out + n, digits, point); n += point;
            out[n++] = '.';
            memcpy(out + n, digits + point, len - point); n += len - point;
        }
        return n;
    }
    out[n++] = digits[0];
    if (len > 1) {
        out[n++] = '.';
        memcpy(out + n, digits + 1, len - 1); n += len - 1;
    }
    return n + snprintf(out + n, 8, "e%c%02d", point - 1 < 0 ? '-' : '+', abs(point - 1));
}

/* -- strings, uuids, dates --------------------------------------------------------- */

/* The bytes of value i of a variable-length source. */
static inline const unsigned char *bytes_at(const Col *c, int64_t i, int64_t *len) {
    if (c->src == 's') {
        const int32_t *o = (const int32_t *)c->offsets;
        *len = (int64_t)o[i + 1] - o[i];
        return c->values + o[i];
    }
    const int64_t *o = (const int64_t *)c->offsets;
    *len = o[i + 1] - o[i];
    return c->values + o[i];
}

static inline int hexval(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* uuid_in's syntax: 32 hex digits, optionally in braces, a hyphen allowed after each group of 4. */
static int parse_uuid(const unsigned char *s, int64_t n, unsigned char *out) {
    int64_t k = 0;
    int braces = n > 0 && s[0] == '{';
    k += braces;
    for (int i = 0; i < 16; i++) {
        if (k + 2 > n) return -1;
        int hi = hexval(s[k]), lo = hexval(s[k + 1]);
        if (hi < 0 || lo < 0) return -1;
        if (out) out[i] = (unsigned char)(hi << 4 | lo);
        k += 2;
        if (k < n && s[k] == '-' && (i % 2) == 1 && i < 15) k++;
    }
    if (braces) {
        if (k >= n || s[k] != '}') return -1;
        k++;
    }
    return k == n ? 0 : -1;
}

static const char NOT_UUID[] = "not a UUID (PostgreSQL's uuid input takes 32 hex digits, optionally "
    "in braces, with a hyphen allowed after any group of four)";

/* Days since 1970 -> the proleptic Gregorian date (H. Hinnant's civil_from_days). */
static void civil(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static inline int64_t floordiv(int64_t a, int64_t b, int64_t *rem) {
    int64_t q = a / b, r = a % b;
    if (r < 0) { q--; r += b; }
    *rem = r;
    return q;
}

static const char JSON_YEARS[] = "a date outside the years 1-9999, which JSON's ISO text cannot hold";

static int put_date(int64_t days, Out *o) {
    int64_t y;
    int m, d;
    if (days < -719162 || days > 2932896) return -1;  /* 0001-01-01 .. 9999-12-31 */
    civil(days, &y, &m, &d);
    char buf[32];
    snprintf(buf, sizeof buf, "%04d-%02d-%02d", (int)y, m, d);
    put(o, buf, 10);
    return 0;
}

/* HH:MM:SS and the fraction of a second (digits of the unit, trailing zeros dropped). */
static void put_clock(int64_t ticks, int unit, Out *o) {
    static const int64_t PER_SECOND[4] = {1, 1000, 1000000, 1000000000};
    static const int DIGITS[4] = {0, 3, 6, 9};
    int64_t frac, secs = floordiv(ticks, PER_SECOND[unit], &frac);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%02d:%02d:%02d", (int)(secs / 3600), (int)(secs / 60 % 60),
                     (int)(secs % 60));
    if (frac) {
        int digits = DIGITS[unit];
        n += snprintf(buf + n, sizeof buf - n, ".%0*lld", digits, (long long)frac);
        while (buf[n - 1] == '0') n--;
    }
    put(o, buf, n);
}

/* A JSON string of the bytes: quotes, backslashes and control characters escaped. */
static int put_json_string(const unsigned char *s, int64_t n, int jsonb, Out *o) {
    static const char HEX[] = "0123456789abcdef";
    put1(o, '"');
    int64_t run = 0;
    for (int64_t k = 0; k < n; k++) {
        unsigned char ch = s[k];
        if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
        if (!ch && jsonb) return -1;
        put(o, s + run, k - run);
        run = k + 1;
        put1(o, '\\');
        switch (ch) {
        case '"': put1(o, '"'); break;
        case '\\': put1(o, '\\'); break;
        case '\b': put1(o, 'b'); break;
        case '\f': put1(o, 'f'); break;
        case '\n': put1(o, 'n'); break;
        case '\r': put1(o, 'r'); break;
        case '\t': put1(o, 't'); break;
        default: {
            unsigned char u[5] = {'u', '0', '0', HEX[ch >> 4], HEX[ch & 15]};
            put(o, u, 5);
        }
        }
    }
    put(o, s + run, n - run);
    put1(o, '"');
    return 0;
}

static void put_uuid_text(const unsigned char *b, Out *o) {
    static const char HEX[] = "0123456789abcdef";
    char buf[36];
    int n = 0;
    for (int k = 0; k < 16; k++) {
        if (k == 4 || k == 6 || k == 8 || k == 10) buf[n++] = '-';
        buf[n++] = HEX[b[k] >> 4];
        buf[n++] = HEX[b[k] & 15];
    }
    put(o, buf, 36);
}

/* -- lists ------------------------------------------------------------------------- */

/* The child range of list value i: the child's logical start and the length. */
static inline void list_range(const Col *c, int64_t i, int64_t *start, int64_t *len) {
    switch (c->src) {
    case '+': case '<': {
        const int32_t *o = (const int32_t *)c->offsets;
        *start = o[i]; *len = (int64_t)o[i + 1] - o[i];
        return;
    }
    case '=': {
        const int64_t *o = (const int64_t *)c->offsets;
        *start = o[i]; *len = o[i + 1] - o[i];
        return;
    }
    case '#': *start = i * c->param; *len = c->param; return;
    case '/': *start = ((const int32_t *)c->offsets)[i]; *len = ((const int32_t *)c->values)[i]; return;
    default: *start = ((const int64_t *)c->offsets)[i]; *len = ((const int64_t *)c->values)[i]; return;
    }
}

/* -- JSON -------------------------------------------------------------------------- */

static int64_t value_size(const Col *c, int64_t i, Failure *f);
static int64_t write_value(const Col *c, int64_t i, unsigned char *p);
static int render(const Col *c, int64_t i, Out *o, Failure *f);

/* Whether a column's values are rendered once into its Out (arrays, JSON of non-strings). */
static inline int rendered(const Col *c) {
    return c->dst == 'A' || ((c->dst == 'J' || c->dst == 'j') && c->src != 's' && c->src != 'S');
}

static const char JSON_NAN[] = "NaN or Infinity, which JSON cannot hold (write NULL instead, or "
    "use a float column)";
static const char JSON_NUL[] = "a string with a NUL character (\\u0000), which jsonb cannot hold";
static const char JSON_DUPLICATE[] = "a map with a duplicate key, which jsonb would keep only once";

/* Whether map entries a and b (child indices) have the same key. */
static int same_key(const Col *k, int64_t a, int64_t b) {
    if (k->src == 's' || k->src == 'S') {
        int64_t la, lb;
        const unsigned char *sa = bytes_at(k, a, &la), *sb = bytes_at(k, b, &lb);
        return la == lb && !memcmp(sa, sb, la);
    }
    return integer(k, a) == integer(k, b);
}

/* The JSON of value i of c (a node inside JSON, or a 'J'/'j' root); -1 with f->reason on failure. */
static int json(const Col *c, int64_t i, int jsonb, Out *o, Failure *f) {
    char buf[48];
    if (is_null(c, i)) { put(o, "null", 4); return 0; }
    switch (c->dst) {
    case 'k': {
        int64_t days = c->src == 'i' ? ((const int32_t *)c->values)[i] : 0, rem = 0;
        if (c->src == 'l') days = floordiv(((const int64_t *)c->values)[i], 86400000, &rem);
        if (rem) { f->reason = "a date64 value that is not a whole number of days"; return -1; }
        put1(o, '"');
        if (put_date(days, o)) { f->reason = JSON_YEARS; return -1; }
        put1(o, '"');
        return 0;
    }
    case 'K': case 'Z': {
        static const int64_t PER_DAY[4] = {86400LL, 86400000LL, 86400000000LL, 86400000000000LL};
        int64_t ticks, days = floordiv(((const int64_t *)c->values)[i], PER_DAY[c->param], &ticks);
        put1(o, '"');
        if (put_date(days, o)) { f->reason = JSON_YEARS; return -1; }
        put1(o, 'T');
        put_clock(ticks, c->param, o);
        if (c->dst == 'Z') put(o, "+00:00", 6);
        put1(o, '"');
        return 0;
    }
    case 'q': {
        int64_t ticks = c->src == 'i' ? ((const int32_t *)c->values)[i] : ((const int64_t *)c->values)[i];
        put1(o, '"');
        put_clock(ticks, c->param, o);
        put1(o, '"');
        return 0;
    }
    case 'w':
        put1(o, '"');
        put_uuid_text(c->values + 16 * i, o);
        put1(o, '"');
        return 0;
    case '0':
        put(o, "null", 4);
        return 0;
    case 'y': {  /* JSON text (Arrow's json extension) as it is */
        int64_t len;
        const unsigned char *s = bytes_at(c, i, &len);
        put(o, s, len);
        return 0;
    }
    }
    switch (c->src) {  /* 'j' (and the 'J' root): by source */
    case '0':
        put(o, "null", 4);
        return 0;
    case '?':
        if (bit(c->values, i)) put(o, "true", 4);
        else put(o, "false", 5);
        return 0;
    case 'e': case 'f': case 'd': {
        double x = c->src == 'd' ? ((const double *)c->values)[i]
                 : c->src == 'f' ? (double)((const float *)c->values)[i]
                 : (double)half_to_float(((const uint16_t *)c->values)[i]);
        if (!isfinite(x)) { f->reason = JSON_NAN; return -1; }
        put(o, buf, shortest(x, c->src != 'd', buf));
        return 0;
    }
    case 's': case 'S': {
        int64_t len;
        const unsigned char *s = bytes_at(c, i, &len);
        if (put_json_string(s, len, jsonb, o)) { f->reason = JSON_NUL; return -1; }
        return 0;
    }
    case 'X': {
        unsigned char d[80];
        int negative, nd = wide_digits(c, i, d, &negative);
        digits_text(d, nd, c->param, negative, o);
        return 0;
    }
    case '{':
        put1(o, '{');
        for (int k = 0; k < c->nchildren; k++) {
            const Col *ch = &c->children[k];
            if (k) put1(o, ',');
            put(o, c->names[k], c->name_lens[k]);
            if (json(ch, i - c->offset + ch->offset, jsonb, o, f)) return -1;
        }
        put1(o, '}');
        return 0;
    case '<': {
        int64_t start, len;
        list_range(c, i, &start, &len);
        const Col *key = &c->children[0], *val = &c->children[1];
        put1(o, '{');
        for (int64_t j = 0; j < len; j++) {
            int64_t ki = key->offset + start + j;
            if (j) put1(o, ',');
            if (jsonb)
                for (int64_t e = 0; e < j; e++)
                    if (same_key(key, key->offset + start + e, ki)) { f->reason = JSON_DUPLICATE; return -1; }
            if (key->src == 's' || key->src == 'S') {
                int64_t kl;
                const unsigned char *ks = bytes_at(key, ki, &kl);
                if (put_json_string(ks, kl, jsonb, o)) { f->reason = JSON_NUL; return -1; }
            } else {
                put1(o, '"');
                if (json(key, ki, jsonb, o, f)) return -1;
                put1(o, '"');
            }
            put1(o, ':');
            if (json(val, val->offset + start + j, jsonb, o, f)) return -1;
        }
        put1(o, '}');
        return 0;
    }
    default:
        if (is_list(c->src)) {
            int64_t start, len;
            list_range(c, i, &start, &len);
            const Col *ch = &c->children[0];
            put1(o, '[');
            for (int64_t j = 0; j < len; j++) {
                if (j) put1(o, ',');
                if (json(ch, ch->offset + start + j, jsonb, o, f)) return -1;
            }
            put1(o, ']');
            return 0;
        }
        {  /* integers, decimal32/64/128 at scale param */
            unsigned char d[48];
            int negative, nd = narrow_digits(c, i, d, &negative);
            digits_text(d, nd, c->param, negative, o);
            return 0;
        }
    }
}

/* -- PostgreSQL arrays ------------------------------------------------------------- */

typedef struct {
    int ndim, hasnull;
    int64_t dims[MAXDIM];
} Shape;

static const char RAGGED[] = "nested lists of different lengths (PostgreSQL's multidimensional "
    "arrays are rectangular)";
static const char NULL_SUBLIST[] = "a NULL nested list (a PostgreSQL array cannot hold a NULL "
    "sub-array; only elements may be NULL)";
static const char EMPTY_SUBLIST[] = "an empty nested list (PostgreSQL would store the whole value as "
    "an empty array '{}')";

/* The dimensions of list value i at depth level (each nested list checked), and whether an element is NULL. */
static const char *shape(const Col *c, int64_t i, int level, Shape *s) {
    int64_t start, len;
    list_range(c, i, &start, &len);
    if (level == s->ndim) {
        if (level >= MAXDIM) return "more than 6 nested levels (PostgreSQL's arrays have at most 6 dimensions)";
        if (level && !len) return EMPTY_SUBLIST;
        s->dims[level] = len;
        s->ndim = level + 1;
    } else if (len != s->dims[level]) {
        return RAGGED;
    }
    const Col *ch = &c->children[0];
    if (ch->dst == 'A') {
        for (int64_t j = 0; j < len; j++) {
            int64_t k = ch->offset + start + j;
            if (is_null(ch, k)) return NULL_SUBLIST;
            const char *why = shape(ch, k, level + 1, s);
            if (why) return why;
        }
    } else if (ch->validity && !s->hasnull) {
        for (int64_t j = 0; j < len; j++)
            if (!bit(ch->validity, ch->offset + start + j)) { s->hasnull = 1; break; }
    }
    return NULL;
}

/* The elements of list value i, row-major, each a length word and its bytes (or -1: NULL). */
static int elements(const Col *c, int64_t i, Out *o, Failure *f) {
    int64_t start, len;
    list_range(c, i, &start, &len);
    const Col *ch = &c->children[0];
    for (int64_t j = 0; j < len; j++) {
        int64_t k = ch->offset + start + j;
        if (ch->dst == 'A') {
            if (elements(ch, k, o, f)) return -1;
        } else if (is_null(ch, k)) {
            put32(o, 0xFFFFFFFFu);
        } else if (rendered(ch)) {  /* jsonb[] */
            int64_t at = o->n;
            put32(o, 0);
            if (render(ch, k, o, f)) return -1;
            patch(o, at);
        } else {
            int64_t n = value_size(ch, k, f);
            if (n < 0) return -1;
            if (room(o, 4 + n)) {
                wr32(o->p + o->n, (uint32_t)n);
                write_value(ch, k, o->p + o->n + 4);
            }
            o->n += 4 + n;
        }
    }
    return 0;
}

/* array_send's format: ndim, has-null flag, element OID, (size, lower bound 1) per dimension, elements. */
static int array(const Col *c, int64_t i, Out *o, Failure *f) {
    Shape s = {0, 0, {0}};
    const char *why = shape(c, i, 0, &s);
    if (why) { f->reason = why; return -1; }
    if (s.ndim == 1 && !s.dims[0]) s.ndim = 0;  /* [] -> '{}': no dimensions */
    int64_t count = s.ndim ? 1 : 0;
    for (int d = 0; d < s.ndim; d++) count *= s.dims[d];
    if (count > 134217727) { f->reason = "more elements than PostgreSQL's arrays hold"; return -1; }
    put32(o, (uint32_t)s.ndim);
    put32(o, (uint32_t)s.hasnull);
    put32(o, (uint32_t)c->extra);
    for (int d = 0; d < s.ndim; d++) {
        put32(o, (uint32_t)s.dims[d]);
        put32(o, 1);
    }
    return s.ndim ? elements(c, i, o, f) : 0;
}

/* -- one value --------------------------------------------------------------------- */

/* Renders an array or the JSON of a value into o (checking every part of it). */
static int render(const Col *c, int64_t i, Out *o, Failure *f) {
    if (c->dst == 'A') return array(c, i, o, f);
    if (c->dst == 'J') put1(o, 1);
    return json(c, i, c->dst == 'J', o, f);
}

/* value_size of the targets beyond the common scalars (kept out of line: those stay fast). */
static __attribute__((noinline)) int64_t other_size(const Col *c, int64_t i, Failure *f) {
    i128 v;
    const char *why = NULL;
    switch (c->dst) {
    case 'h': return 4;
    case 'E': return 8;
    case 'g': case 'G': {
        i128 limit = c->dst == 'g' ? (i128)1 << 24 : (i128)1 << 53;
        v = integer(c, i);
        if (v < -limit || v > limit) {
            why = c->dst == 'g' ? "an integer past +-2^24, which float4 (real) cannot hold exactly"
                                : "an integer past +-2^53, which float8 (double precision) cannot hold exactly";
            break;
        }
        return c->dst == 'g' ? 4 : 8;
    }
    case 'M':
        v = integer(c, i);
        if (v % 86400000) { why = "a date64 value that is not a whole number of days"; break; }
        v = v / 86400000 - POSTGRES_EPOCH_DAYS;
        if (v < INT32_MIN || v > INT32_MAX) { why = "a date out of PostgreSQL's range"; break; }
        return 4;
    case 'R': {
        int64_t ns;
        memcpy(&ns, c->values + 16 * i + 8, 8);
        if (ns % 1000) { why = NOT_WHOLE_US; break; }
        return 16;
    }
    case 'W': {
        unsigned char d[80];
        WideNumeric n;
        int negative, nd = wide_digits(c, i, d, &negative);
        digits_numeric(d, nd, c->param, negative, &n);
        return 8 + 2 * n.ndigits;
    }
    case 'U': {
        int64_t len;
        const unsigned char *s = bytes_at(c, i, &len);
        if (parse_uuid(s, len, NULL)) { why = NOT_UUID; break; }
        return 16;
    }
    case 'u': return 16;
    case 'J': {  /* a string source: the text is the JSON */
        int64_t len;
        bytes_at(c, i, &len);
        if (len >= MAX_VALUE) { why = "longer than PostgreSQL's 1 GB limit for one value"; break; }
        return 1 + len;
    }
    default: why = "an internal error: a rendered target sized as a scalar"; break;
    }
    f->row = i;
    f->reason = why;
    return -1;
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
        if (len > MAX_VALUE) { why = "longer than PostgreSQL's 1 GB limit for one value"; break; }
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
        to_numeric(integer(c, i), c->param, &n);
        return 8 + 2 * n.ndigits;
    }
    default: return other_size(c, i, f);
    }
    f->row = i;
    f->reason = why;
    return -1;
}

/* write_value of the targets other_size sizes. */
static __attribute__((noinline)) int64_t other_write(const Col *c, int64_t i, unsigned char *p) {
    switch (c->dst) {
    case 'h': case 'g': {
        float x = c->dst == 'h' ? half_to_float(((const uint16_t *)c->values)[i]) : (float)integer(c, i);
        uint32_t bits;
        memcpy(&bits, &x, 4);
        wr32(p, bits);
        return 4;
    }
    case 'E': case 'G': {
        double x = c->dst == 'E' ? (double)half_to_float(((const uint16_t *)c->values)[i])
                                 : (double)integer(c, i);
        uint64_t bits;
        memcpy(&bits, &x, 8);
        wr64(p, bits);
        return 8;
    }
    case 'M': wr32(p, (uint32_t)(int32_t)(integer(c, i) / 86400000 - POSTGRES_EPOCH_DAYS)); return 4;
    case 'R': {  /* month_day_nano: int32 months, int32 days, int64 ns */
        int32_t months, days;
        int64_t ns;
        memcpy(&months, c->values + 16 * i, 4);
        memcpy(&days, c->values + 16 * i + 4, 4);
        memcpy(&ns, c->values + 16 * i + 8, 8);
        wr64(p, (uint64_t)(ns / 1000));
        wr32(p + 8, (uint32_t)days);
        wr32(p + 12, (uint32_t)months);
        return 16;
    }
    case 'W': {
        unsigned char d[80];
        WideNumeric n;
        int negative, nd = wide_digits(c, i, d, &negative);
        digits_numeric(d, nd, c->param, negative, &n);
        wr16(p, n.ndigits); wr16(p + 2, (uint16_t)n.weight); wr16(p + 4, n.sign); wr16(p + 6, c->param);
        for (int k = 0; k < n.ndigits; k++) wr16(p + 8 + 2 * k, n.groups[k]);
        return 8 + 2 * n.ndigits;
    }
    case 'U': {
        int64_t len;
        const unsigned char *s = bytes_at(c, i, &len);
        parse_uuid(s, len, p);
        return 16;
    }
    case 'u': memcpy(p, c->values + 16 * i, 16); return 16;
    default: {  /* 'J' from a string */
        int64_t len;
        const unsigned char *s = bytes_at(c, i, &len);
        *p = 1;
        memcpy(p + 1, s, len);
        return 1 + len;
    }
    }
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
    case 'N': {
        Numeric n;
        int scale = c->param;
        to_numeric(integer(c, i), scale, &n);
        wr16(p, n.ndigits); wr16(p + 2, (uint16_t)n.weight); wr16(p + 4, n.sign); wr16(p + 6, scale);
        for (int k = 0; k < n.ndigits; k++) wr16(p + 8 + 2 * k, n.groups[k]);
        return 8 + 2 * n.ndigits;
    }
    default: return other_write(c, i, p);
    }
}

/* Renders value i of an array or JSON column after its length word into the column's Out;
 * returns its size, or -1 with f set. */
static __attribute__((noinline)) int64_t rendered_size(const Col *col, int64_t i, Failure *f) {
    Out *o = col->out;
    int64_t at = o->n, n;
    put32(o, 0);
    if (render(col, i, o, f)) return -1;
    if (o->failed) { f->reason = "out of memory"; return -1; }
    if ((n = o->n - at - 4) > MAX_VALUE) {
        f->reason = "longer than PostgreSQL's 1 GB limit for one value";
        return -1;
    }
    patch(o, at);
    return n;
}

/* Second pass's copy of a rendered value (length word and bytes); returns the bytes copied. */
static __attribute__((noinline)) int64_t copy_rendered(const Col *col, unsigned char *p) {
    Out *o = col->out;
    const unsigned char *q = o->p + o->pos;
    int64_t n = 4 + ((int64_t)q[0] << 24 | q[1] << 16 | q[2] << 8 | q[3]);
    memcpy(p, q, n);
    o->pos += n;
    return n;
}

/* First pass: the rows [start, *next) that fit max_bytes (at least one) and their size.
 * (measure and fill are compiled apart from encode: their loops come out faster.) */
static __attribute__((noinline)) int measure(const Col *cols, int ncols, int64_t start, int64_t stop, int64_t max_bytes,
                   int64_t *next, int64_t *size, Failure *f) {
    int64_t total = 0, r;
    for (r = start; r < stop; r++) {
        int64_t row = 2;
        for (int c = 0; c < ncols; c++) {
            const Col *col = &cols[c];
            int64_t i = col->offset + r;
            row += 4;
            if (col->validity && !bit(col->validity, i)) continue;
            int64_t n = __builtin_expect(col->out != NULL, 0) ? rendered_size(col, i, f) : value_size(col, i, f);
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
static __attribute__((noinline)) void fill(const Col *cols, int ncols, int64_t start, int64_t next, unsigned char *p) {
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
            if (__builtin_expect(col->out != NULL, 0)) {  /* rendered by measure() */
                p += copy_rendered(col, p);
                continue;
            }
            int64_t n = write_value(col, i, p + 4);
            wr32(p, (uint32_t)n);
            p += 4 + n;
        }
    }
}

/* -- the column tuples ------------------------------------------------------------- */

/* What parsing the column tuples holds until the call ends: buffer views and allocations. */
typedef struct {
    Py_buffer *views;
    int nviews, cap;
    void **allocs;
    int nallocs, acap;
} Held;

static void *hold_alloc(Held *h, size_t n, size_t size) {
    if (h->nallocs == h->acap) {
        int cap = h->acap ? 2 * h->acap : 16;
        void **grown = PyMem_Realloc(h->allocs, cap * sizeof(void *));
        if (!grown) { PyErr_NoMemory(); return NULL; }
        h->allocs = grown;
        h->acap = cap;
    }
    void *p = PyMem_Calloc(n ? n : 1, size);
    if (!p) { PyErr_NoMemory(); return NULL; }
    h->allocs[h->nallocs++] = p;
    return p;
}

static int hold_buffer(Held *h, PyObject *obj, const unsigned char **out) {
    if (obj == Py_None) { *out = NULL; return 0; }
    if (h->nviews == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        Py_buffer *grown = PyMem_Realloc(h->views, cap * sizeof(Py_buffer));
        if (!grown) { PyErr_NoMemory(); return -1; }
        h->views = grown;
        h->cap = cap;
    }
    if (PyObject_GetBuffer(obj, &h->views[h->nviews], PyBUF_SIMPLE) < 0) return -1;
    *out = h->views[h->nviews++].buf;
    return 0;
}

static void release(Held *h) {
    for (int k = 0; k < h->nviews; k++) PyBuffer_Release(&h->views[k]);
    for (int k = 0; k < h->nallocs; k++) PyMem_Free(h->allocs[k]);
    PyMem_Free(h->views);
    PyMem_Free(h->allocs);
}

/* How many children a source needs (-1: any number, a struct's). */
static int children_needed(char src) {
    if (is_list(src)) return 1;
    if (src == '<') return 2;
    if (src == '{') return -1;
    return 0;
}

static int parse_col(PyObject *tuple, Col *col, Held *h, const char *where, int depth) {
    const char *op;
    Py_ssize_t oplen;
    PyObject *validity, *offsets, *values, *children = NULL, *names = NULL;
    if (depth > MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "%s: nested more than %d levels", where, MAX_DEPTH);
        return -1;
    }
    if (!PyArg_ParseTuple(tuple, "y#inOOO|OOl;a column is (op, param, offset, validity, offsets, "
                          "values[, children, names, extra])", &op, &oplen, &col->param, &col->offset,
                          &validity, &offsets, &values, &children, &names, &col->extra))
        return -1;
    if (oplen != 2 || !op[0] || !op[1] || !strchr(SOURCES, op[0]) || !strchr(TARGETS, op[1])) {
        PyErr_Format(PyExc_ValueError, "%s: unknown op %R", where, PyTuple_GET_ITEM(tuple, 0));
        return -1;
    }
    col->src = op[0];
    col->dst = op[1];
    int variable = col->src == 's' || col->src == 'S' || is_list(col->src) || col->src == '<';
    variable = variable && col->src != '#';
    if (variable != (offsets != Py_None) || values == Py_None || col->offset < 0 || col->param < 0 ||
        (col->src != '#' && col->param > 76) || (col->dst == 'N' && col->param > 38) ||
        (strchr("TtIKZq", col->dst) && col->param > 3)) {
        PyErr_Format(PyExc_ValueError, "%s: buffers or params do not match op", where);
        return -1;
    }
    if (hold_buffer(h, validity, &col->validity) < 0 || hold_buffer(h, offsets, &col->offsets) < 0 ||
        hold_buffer(h, values, &col->values) < 0)
        return -1;
    int needed = children_needed(col->src);
    Py_ssize_t n = children && children != Py_None ? PySequence_Length(children) : 0;
    if (n < 0) return -1;
    if ((needed >= 0 && n != needed) || (col->src == '{' && (!names || names == Py_None ||
                                                             PySequence_Length(names) != n))) {
        PyErr_Format(PyExc_ValueError, "%s: the children (or names) do not match op", where);
        return -1;
    }
    if (!n) return 0;
    col->nchildren = (int)n;
    col->children = hold_alloc(h, n, sizeof(Col));
    if (!col->children) return -1;
    if (col->src == '{') {
        col->names = hold_alloc(h, n, sizeof(char *));
        col->name_lens = hold_alloc(h, n, sizeof(Py_ssize_t));
        if (!col->names || !col->name_lens) return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *child = PySequence_GetItem(children, k);
        if (!child) return -1;
        int rc = PyTuple_Check(child) ? parse_col(child, &col->children[k], h, where, depth + 1) : -1;
        if (rc < 0 && !PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: a child is not a tuple", where);
        Py_DECREF(child);
        if (rc < 0) return -1;
        if (col->src == '{') {
            PyObject *name = PySequence_GetItem(names, k);
            if (!name) return -1;
            /* names is a tuple the caller keeps alive for the call: borrowed bytes stay valid */
            char *s;
            rc = PyBytes_AsStringAndSize(name, &s, &col->name_lens[k]);
            Py_DECREF(name);
            if (rc < 0) return -1;
            col->names[k] = s;
        }
    }
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
    Held held = {NULL, 0, 0, NULL, 0, 0};
    if (ncols < 1 || ncols > MAX_COLUMNS) {
        PyErr_SetString(PyExc_ValueError, "between 1 and 1600 columns expected");
        goto done;
    }
    if (start < 0 || stop < start || max_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "0 <= start <= stop and max_bytes >= 1 expected");
        goto done;
    }
    cols = hold_alloc(&held, ncols, sizeof(Col));
    if (!cols) goto done;
    for (Py_ssize_t c = 0; c < ncols; c++) {
        char where[32];
        snprintf(where, sizeof where, "column %zd", c);
        PyObject *item = PySequence_Fast_GET_ITEM(seq, c);
        if (!PyTuple_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s: a tuple expected", where);
            goto done;
        }
        if (parse_col(item, &cols[c], &held, where, 0) < 0) goto done;
        if (rendered(&cols[c]) && !(cols[c].out = hold_alloc(&held, 1, sizeof(Out)))) goto done;
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
    for (Py_ssize_t c = 0; cols && c < ncols; c++)
        if (cols[c].out) free(cols[c].out->p);
    release(&held);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef METHODS[] = {
    {"encode", encode, METH_VARARGS,
     "encode(columns, start, stop, max_bytes) -> (block, next)\n\n"
     "Encode rows start.. (up to stop) of one record batch as binary COPY tuples,\n"
     "at most max_bytes (at least one row); next is the first row not encoded.\n"
     "columns: (op, param, offset, validity, offsets, values[, children, names, extra])\n"
     "per column."},
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
