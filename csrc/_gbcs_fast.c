/* protocols._fast: the optional C fast path of the GBCS codec (issue 8).
 *
 * Theory of operation
 * -------------------
 * The construct declarations in protocols/ are the single source of truth. Every function here mirrors a
 * hand-written Python fast path (protocols/gbcs/message.py `_split_fast`, protocols/dlms/apdu.py, the A-XDR
 * `parse_data`, the framing `_try` methods, CRC-16/X.25, KDF + GMAC) and follows the same contract:
 *
 *   - it returns exactly the value the declared path returns, built from the same Python types; or
 *   - it returns None, meaning "not sure": the caller runs the Python path, which produces the value or,
 *     on bad input, the error (so every error message, field path and offset stays the declarations').
 *
 * Internally a parser returns a new reference, or NULL with no exception set for "not sure", or NULL with an
 * exception set for a real failure (MemoryError); the module entry points turn the first NULL into None.
 * Name tables (CRA flags, message-code use cases, DLMS kinds and results) are handed over by the Python
 * modules that declare them (`set_tables`), so no name is typed twice; until they are set, the functions that
 * need them answer None.
 *
 * Crypto (compiled when OpenSSL's headers were found, GBCS_FAST_CRYPTO): KDF (SHA-256, one round) and GMAC
 * (AES-128-GCM over empty plaintext) in one call through libcrypto's EVP interface; no cipher is written here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#ifdef GBCS_FAST_CRYPTO
#include <openssl/evp.h>
#endif

#define MAX_DEPTH 48
#define MAC_LENGTH 12
#define SIGNATURE_LENGTH 64

/* ---------------------------------------------------------------------------------------------- tables */

static PyObject *T_cra_names;        /* {int: "command"|...} */
static PyObject *T_use_cases;        /* {message code: use-case name} */
static PyObject *T_kind_names;       /* {int: "get"|...} */
static PyObject *T_access_results;   /* {int: name} */
static PyObject *T_action_results;   /* {int: name} */

/* interned keys and names */
static PyObject *S_type, *S_value, *S_length, *S_bits;
static PyObject *AXDR_NAMES[34];         /* by tag; 19 (compact-array) stays NULL: never a type-description leaf */
static PyObject *S_compact_name;         /* "compact-array" */

#define NOT_SURE NULL

static PyObject *
hex_upper(const uint8_t *p, Py_ssize_t n)
{
    static const char digits[] = "0123456789ABCDEF";
    PyObject *s = PyUnicode_New(2 * n, 127);
    if (!s)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    return s;
}

static inline uint64_t
be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* set d[key] = value, stealing value; returns -1 on failure (value released) */
static int
put(PyObject *d, const char *key, PyObject *value)
{
    if (!value)
        return -1;
    int r = PyDict_SetItemString(d, key, value);
    Py_DECREF(value);
    return r;
}

static int
put_o(PyObject *d, PyObject *key, PyObject *value)
{
    if (!value)
        return -1;
    int r = PyDict_SetItem(d, key, value);
    Py_DECREF(value);
    return r;
}

static PyObject *
table_get(PyObject *table, long key)
{
    if (!table)
        return NULL;
    PyObject *k = PyLong_FromLong(key);
    if (!k)
        return NULL;
    PyObject *v = PyDict_GetItemWithError(table, k);   /* borrowed */
    Py_DECREF(k);
    return v;
}

/* A minimal A-XDR length as message.py's `_ber` reads it (00..7F, 81 nn>=80, 82 nnnn>=0100): 0 or -1. */
static int
ber_min(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t *value, Py_ssize_t *next)
{
    if (pos >= end)
        return -1;
    uint8_t first = d[pos];
    if (first < 0x80) {
        *value = first;
        *next = pos + 1;
        return 0;
    }
    if (first == 0x81) {
        if (pos + 2 > end || d[pos + 1] < 0x80)
            return -1;
        *value = d[pos + 1];
        *next = pos + 2;
        return 0;
    }
    if (first == 0x82) {
        if (pos + 3 > end)
            return -1;
        Py_ssize_t v = ((Py_ssize_t)d[pos + 1] << 8) | d[pos + 2];
        if (v < 0x100)
            return -1;
        *value = v;
        *next = pos + 3;
        return 0;
    }
    return -1;
}

/* `prims.read_ber_length` (up to 84 nnnnnnnn, minimal only) without its errors: 0 or -1 ("not sure"). */
static int
ber_full(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t *value, Py_ssize_t *next)
{
    if (pos >= end)
        return -1;
    uint8_t first = d[pos];
    if (first < 0x80) {
        *value = first;
        *next = pos + 1;
        return 0;
    }
    int n = first & 0x7F;
    if (n == 0 || n > 4 || pos + 1 + n > end)
        return -1;
    uint64_t v = be(d + pos + 1, n);
    if (v < 0x80 || v < ((uint64_t)1 << (8 * (n - 1))))
        return -1;
    *value = (Py_ssize_t)v;
    *next = pos + 1 + n;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- A-XDR */

static PyObject *axdr_data(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, int depth, Py_ssize_t *next);
static PyObject *axdr_compact(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, int depth, Py_ssize_t *next);

/* the value (no tag) of type `tag` at pos */
static PyObject *
axdr_value(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, uint8_t tag, int depth, Py_ssize_t *next)
{
    Py_ssize_t n, p;
    switch (tag) {
    case 0:                                         /* null-data */
        *next = pos;
        Py_RETURN_NONE;
    case 1: case 2: {                               /* array, structure */
        if (ber_full(d, pos, end, &n, &p) < 0)
            return NOT_SURE;
        if (n > end - p)                            /* each element needs at least its tag byte */
            return NOT_SURE;
        PyObject *items = PyList_New(n);
        if (!items)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            if (p >= end) {
                Py_DECREF(items);
                return NOT_SURE;
            }
            PyObject *item = axdr_data(d, p, end, depth + 1, &p);
            if (!item) {
                Py_DECREF(items);
                return NULL;
            }
            PyList_SET_ITEM(items, i, item);
        }
        *next = p;
        return items;
    }
    case 3: {                                       /* boolean */
        if (pos >= end)
            return NOT_SURE;
        uint8_t b = d[pos];
        *next = pos + 1;
        if (b > 1)
            return PyLong_FromLong(b);
        return PyBool_FromLong(b);
    }
    case 4: {                                       /* bit-string */
        if (ber_full(d, pos, end, &n, &p) < 0)
            return NOT_SURE;
        Py_ssize_t nbytes = (n + 7) / 8;
        if (nbytes > end - p)
            return NOT_SURE;
        PyObject *r = PyDict_New();
        if (!r)
            return NULL;
        if (put_o(r, S_length, PyLong_FromSsize_t(n)) < 0 || put_o(r, S_bits, hex_upper(d + p, nbytes)) < 0) {
            Py_DECREF(r);
            return NULL;
        }
        *next = p + nbytes;
        return r;
    }
    case 9: case 10: case 12: {                     /* octet-string, visible-string, utf8-string */
        if (ber_full(d, pos, end, &n, &p) < 0 || n > end - p)
            return NOT_SURE;
        *next = p + n;
        if (tag == 9)
            return hex_upper(d + p, n);
        if (tag == 10)
            return PyUnicode_DecodeLatin1((const char *)d + p, n, NULL);
        PyObject *s = PyUnicode_DecodeUTF8((const char *)d + p, n, "strict");
        if (!s && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return NOT_SURE;
        }
        return s;
    }
    case 5: case 30:                                /* int32 */
        if (end - pos < 4)
            return NOT_SURE;
        *next = pos + 4;
        return PyLong_FromLong((int32_t)(uint32_t)be(d + pos, 4));
    case 6: case 33:                                /* uint32 */
        if (end - pos < 4)
            return NOT_SURE;
        *next = pos + 4;
        return PyLong_FromUnsignedLong((uint32_t)be(d + pos, 4));
    case 13: case 17: case 22: case 31:             /* uint8 */
        if (end - pos < 1)
            return NOT_SURE;
        *next = pos + 1;
        return PyLong_FromLong(d[pos]);
    case 15: case 28:                               /* int8 */
        if (end - pos < 1)
            return NOT_SURE;
        *next = pos + 1;
        return PyLong_FromLong((int8_t)d[pos]);
    case 16: case 29:                               /* int16 */
        if (end - pos < 2)
            return NOT_SURE;
        *next = pos + 2;
        return PyLong_FromLong((int16_t)(uint16_t)be(d + pos, 2));
    case 18: case 32:                               /* uint16 */
        if (end - pos < 2)
            return NOT_SURE;
        *next = pos + 2;
        return PyLong_FromLong((long)be(d + pos, 2));
    case 20:                                        /* long64 */
        if (end - pos < 8)
            return NOT_SURE;
        *next = pos + 8;
        return PyLong_FromLongLong((int64_t)be(d + pos, 8));
    case 21:                                        /* long64-unsigned */
        if (end - pos < 8)
            return NOT_SURE;
        *next = pos + 8;
        return PyLong_FromUnsignedLongLong(be(d + pos, 8));
    case 23: {                                      /* float32: finite values as float, else the raw hex */
        if (end - pos < 4)
            return NOT_SURE;
        uint32_t u = (uint32_t)be(d + pos, 4);
        float f;
        memcpy(&f, &u, 4);
        *next = pos + 4;
        if (isfinite(f))
            return PyFloat_FromDouble((double)f);
        return hex_upper(d + pos, 4);
    }
    case 24: {                                      /* float64 */
        if (end - pos < 8)
            return NOT_SURE;
        uint64_t u = be(d + pos, 8);
        double f;
        memcpy(&f, &u, 8);
        *next = pos + 8;
        if (isfinite(f))
            return PyFloat_FromDouble(f);
        return hex_upper(d + pos, 8);
    }
    case 25: case 26: case 27: {                    /* date-time 12, date 5, time 4: raw hex */
        Py_ssize_t size = tag == 25 ? 12 : tag == 26 ? 5 : 4;
        if (end - pos < size)
            return NOT_SURE;
        *next = pos + size;
        return hex_upper(d + pos, size);
    }
    case 19:                                        /* compact-array */
        return axdr_compact(d, pos, end, depth, next);
    default:                                        /* unknown tags: the Python path words the error */
        return NOT_SURE;
    }
}


/* -- compact-array (axdr._parse_compact): the type description is parsed to its JSON form, then walked again
 *    over its bytes (already validated) to read the untagged values; same depth accounting as Python. */

static PyObject *S_array, *S_structure, *S_count, *S_type_description, *S_values;

static PyObject *
td_parse(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, int depth, Py_ssize_t *next)
{
    if (depth > MAX_DEPTH || pos >= end)
        return NOT_SURE;
    uint8_t tag = d[pos];
    if (tag > 33 || (!AXDR_NAMES[tag] && tag != 1 && tag != 2))
        return NOT_SURE;            /* unknown, or compact-array (19 has no name here) */
    pos++;
    if (tag == 1) {
        if (pos + 2 > end)
            return NOT_SURE;
        long count = (long)be(d + pos, 2);
        PyObject *inner = td_parse(d, pos + 2, end, depth + 1, next);
        if (!inner)
            return NULL;
        return Py_BuildValue("{s:{s:l,s:N}}", "array", "count", count, "type", inner);
    }
    if (tag == 2) {
        Py_ssize_t n, p;
        if (ber_full(d, pos, end, &n, &p) < 0 || n > end - p)
            return NOT_SURE;
        PyObject *items = PyList_New(n);
        if (!items)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *it = td_parse(d, p, end, depth + 1, &p);
            if (!it) {
                Py_DECREF(items);
                return NULL;
            }
            PyList_SET_ITEM(items, i, it);
        }
        *next = p;
        return Py_BuildValue("{s:N}", "structure", items);
    }
    *next = pos;
    Py_INCREF(AXDR_NAMES[tag]);
    return AXDR_NAMES[tag];
}

/* end of a validated type description at t */
static Py_ssize_t
td_end(const uint8_t *d, Py_ssize_t t, Py_ssize_t end)
{
    uint8_t tag = d[t];
    if (tag == 1)
        return td_end(d, t + 3, end);
    if (tag == 2) {
        Py_ssize_t n, p;
        ber_full(d, t + 1, end, &n, &p);
        for (Py_ssize_t i = 0; i < n; i++)
            p = td_end(d, p, end);
        return p;
    }
    return t + 1;
}

static PyObject *
untagged(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, const uint8_t *td, Py_ssize_t t, Py_ssize_t tend,
         int depth, Py_ssize_t *next)
{
    if (depth > MAX_DEPTH)
        return NOT_SURE;
    uint8_t tag = td[t];
    if (tag == 2) {
        Py_ssize_t n, q;
        ber_full(td, t + 1, tend, &n, &q);
        PyObject *out = PyList_New(n);
        if (!out)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = untagged(d, pos, end, td, q, tend, depth + 1, &pos);
            if (!v) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, i, v);
            q = td_end(td, q, tend);
        }
        *next = pos;
        return out;
    }
    if (tag == 1) {
        Py_ssize_t count = (Py_ssize_t)be(td + t + 1, 2);
        if (count > end - pos)                      /* every element takes at least one byte */
            return NOT_SURE;
        PyObject *out = PyList_New(count);
        if (!out)
            return NULL;
        for (Py_ssize_t i = 0; i < count; i++) {
            Py_ssize_t start = pos;
            PyObject *v = untagged(d, pos, end, td, t + 3, tend, depth + 1, &pos);
            if (!v || pos == start) {
                Py_XDECREF(v);
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, i, v);
        }
        *next = pos;
        return out;
    }
    return axdr_value(d, pos, end, tag, depth, next);
}

static PyObject *
axdr_compact(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, int depth, Py_ssize_t *next)
{
    Py_ssize_t tpos = pos, p, n;
    PyObject *td = td_parse(d, pos, end, depth, &pos);
    if (!td)
        return NULL;
    if (ber_full(d, pos, end, &n, &p) < 0 || n > end - p) {
        Py_DECREF(td);
        return NOT_SURE;
    }
    Py_ssize_t cend = p + n;
    PyObject *values = PyList_New(0);
    if (!values) {
        Py_DECREF(td);
        return NULL;
    }
    while (p < cend) {
        Py_ssize_t start = p;
        PyObject *v = untagged(d, p, cend, d, tpos, end, depth + 1, &p);
        if (!v || p == start || PyList_Append(values, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(values);
            Py_DECREF(td);
            return NULL;
        }
        Py_DECREF(v);
    }
    PyObject *r = PyDict_New();
    if (!r) {
        Py_DECREF(values);
        Py_DECREF(td);
        return NULL;
    }
    if (put_o(r, S_type_description, td) < 0) {
        Py_DECREF(values);
        Py_DECREF(r);
        return NULL;
    }
    if (put_o(r, S_values, values) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    *next = cend;
    return r;
}

static PyObject *
axdr_data(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end, int depth, Py_ssize_t *next)
{
    if (depth > MAX_DEPTH || pos >= end)
        return NOT_SURE;
    uint8_t tag = d[pos];
    if (tag > 33 || (!AXDR_NAMES[tag] && tag != 19) || !S_compact_name)
        return NOT_SURE;
    PyObject *value = axdr_value(d, pos + 1, end, tag, depth, next);
    if (!value)
        return NULL;
    PyObject *r = PyDict_New();
    if (!r) {
        Py_DECREF(value);
        return NULL;
    }
    PyObject *name = tag == 19 ? S_compact_name : AXDR_NAMES[tag];
    Py_INCREF(name);
    if (put_o(r, S_type, name) < 0 || put_o(r, S_value, value) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static PyObject *
sure(PyObject *r)
{
    if (!r && !PyErr_Occurred())
        Py_RETURN_NONE;
    return r;
}

PyDoc_STRVAR(axdr_parse_doc, "axdr_parse(buf, pos=0) -> (value, next) | None\n\n"
             "One A-XDR Data at pos, as protocols.dlms.axdr.parse_data returns it; None when not sure.");

static PyObject *
py_axdr_parse(PyObject *self, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t pos = 0, next = 0;
    if (!PyArg_ParseTuple(args, "y*|n", &b, &pos))
        return NULL;
    PyObject *r = NULL;
    if (pos >= 0 && pos < b.len) {
        PyObject *v = axdr_data(b.buf, pos, b.len, 0, &next);
        if (v) {
            r = Py_BuildValue("(Nn)", v, next);
        }
    }
    PyBuffer_Release(&b);
    return sure(r);
}

/* ---------------------------------------------------------------------------------------------- envelope */

static PyObject *
dlms_datetime(const uint8_t *b)
{
    int dev = (int)be(b + 9, 2);
    if (dev & 0x8000)
        dev -= 0x10000;
    return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}",
                         "year", (int)be(b, 2), "month", b[2], "day_of_month", b[3], "day_of_week", b[4],
                         "hour", b[5], "minute", b[6], "second", b[7], "hundredths", b[8], "deviation", dev,
                         "clock_status", b[11]);
}

PyDoc_STRVAR(split_envelope_doc, "split_envelope(data) -> (envelope, payload, offset) | None\n\n"
             "message._split_fast in C: a MAC'd DD around a DF, or a bare DF; None for anything else.");

static PyObject *
split_envelope(const uint8_t *d, Py_ssize_t n, PyObject *data_obj)
{
    if (n < 33 || !T_cra_names || !T_use_cases)
        return NOT_SURE;
    PyObject *out = PyDict_New(), *gh = NULL, *oi = NULL, *dt = NULL, *sig = NULL;
    if (!out)
        return NULL;
    Py_ssize_t start, end, size, p, q;
    if (d[0] == 0xDD) {
        static const uint8_t zeros[6] = {0};
        if (memcmp(d + 1, zeros, 6) != 0 || ber_min(d, 7, n, &size, &p) < 0 || size + p != n
            || size < 5 + 1 + MAC_LENGTH)
            goto not_sure;
        start = p + 5;
        end = n - MAC_LENGTH;
        if (d[start] != 0xDF)
            goto not_sure;
        PyObject *sh = Py_BuildValue("{s:i,s:k}", "security_control", d[p], "invocation_counter",
                                     (unsigned long)be(d + p + 1, 4));
        PyObject *mh = sh ? Py_BuildValue("{s:N,s:N}", "security_header", sh, "mac",
                                          hex_upper(d + end, MAC_LENGTH)) : NULL;
        if (put(out, "mac_header", mh) < 0)
            goto fail;
    } else if (d[0] == 0xDF) {
        start = 0;
        end = n;
    } else {
        goto not_sure;
    }
    p = start;
    if (end - p < 33 || d[p + 1] != 9 || d[p + 11] != 8 || d[p + 20] != 8)
        goto not_sure;
    PyObject *cra = table_get(T_cra_names, d[p + 2]);
    if (!cra) {
        if (PyErr_Occurred())
            goto fail;
        goto not_sure;
    }
    uint64_t counter = be(d + p + 3, 8);
    const uint8_t *orig = d + p + 12, *recip = d + p + 21;
    p += 29;
    if (d[p] == 0) {
        dt = Py_None;
        Py_INCREF(dt);
        p += 1;
    } else if (d[p] == 12 && p + 13 <= end) {
        dt = dlms_datetime(d + p + 1);
        if (!dt)
            goto fail;
        p += 13;
    } else {
        goto not_sure;
    }
    if (ber_min(d, p, end, &size, &q) < 0)
        goto not_sure;
    Py_ssize_t oi_end = q + size;
    if (oi_end > end || size < 2 || !(size == 2 || size == 10 || size == 18 || size == 26 || size > 26))
        goto not_sure;
    unsigned code = (unsigned)be(d + q, 2);
    oi = PyDict_New();
    char code_text[7];
    snprintf(code_text, sizeof code_text, "0x%04X", code);
    if (!oi || put(oi, "message_code", PyUnicode_FromString(code_text)) < 0)
        goto fail;
    PyObject *uc = table_get(T_use_cases, code);
    if (uc) {
        if (PyDict_SetItemString(oi, "use_case", uc) < 0)
            goto fail;
    } else if (PyErr_Occurred()) {
        goto fail;
    }
    if (size >= 10 && put(oi, "supplementary_remote_party_id", hex_upper(d + q + 2, 8)) < 0)
        goto fail;
    if (size >= 18 && put(oi, "supplementary_remote_party_counter",
                          PyLong_FromUnsignedLongLong(be(d + q + 10, 8))) < 0)
        goto fail;
    if (size == 26 && put(oi, "supplementary_originator_counter",
                          PyLong_FromUnsignedLongLong(be(d + q + 18, 8))) < 0)
        goto fail;
    if (size > 26 && put(oi, "supplementary_remote_party_ka_certificate", hex_upper(d + q + 18, size - 18)) < 0)
        goto fail;
    Py_ssize_t c0, c1;
    if (ber_min(d, oi_end, end, &size, &c0) < 0)
        goto not_sure;
    c1 = c0 + size;
    if (c1 == end) {
        sig = Py_None;
        Py_INCREF(sig);
    } else if (c1 + 1 == end && d[c1] == 0) {
        sig = PyUnicode_FromStringAndSize("", 0);
    } else if (c1 + 1 + SIGNATURE_LENGTH == end && d[c1] == SIGNATURE_LENGTH) {
        sig = hex_upper(d + c1 + 1, SIGNATURE_LENGTH);
    } else {
        goto not_sure;
    }
    if (!sig)
        goto fail;
    gh = PyDict_New();
    if (!gh)
        goto fail;
    Py_INCREF(cra);
    if (put(gh, "cra_flag", cra) < 0 || put(gh, "originator_counter", PyLong_FromUnsignedLongLong(counter)) < 0
        || put(gh, "originator", hex_upper(orig, 8)) < 0 || put(gh, "recipient", hex_upper(recip, 8)) < 0)
        goto fail;
    int r1 = PyDict_SetItemString(gh, "date_time", dt);
    Py_CLEAR(dt);
    if (r1 < 0 || put(gh, "other_information", oi) < 0) {
        oi = NULL;
        goto fail;
    }
    oi = NULL;
    int r2 = PyDict_SetItemString(out, "grouping_header", gh);
    Py_CLEAR(gh);
    int r3 = r2 < 0 ? -1 : PyDict_SetItemString(out, "signature", sig);
    Py_CLEAR(sig);
    if (r3 < 0)
        goto fail;
    PyObject *content;
    if (c0 == 0 && c1 == n && data_obj) {
        content = data_obj;
        Py_INCREF(content);
    } else {
        content = PyBytes_FromStringAndSize((const char *)d + c0, c1 - c0);
    }
    if (!content)
        goto fail;
    return Py_BuildValue("(NNn)", out, content, c0);
not_sure:
fail:
    Py_XDECREF(out);
    Py_XDECREF(gh);
    Py_XDECREF(oi);
    Py_XDECREF(dt);
    Py_XDECREF(sig);
    return NULL;
}

static PyObject *
py_split_envelope(PyObject *self, PyObject *arg)
{
    if (!PyBytes_Check(arg))
        Py_RETURN_NONE;
    return sure(split_envelope((const uint8_t *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), NULL));
}

/* ---------------------------------------------------------------------------------------------- DLMS */

static PyObject *
obis_str(const uint8_t *b)
{
    return PyUnicode_FromFormat("%u-%u:%u.%u.%u.%u", b[0], b[1], b[2], b[3], b[4], b[5]);
}

/* an access-request-specification at *p: {kind, descriptor, access_selection} */
static PyObject *
dlms_spec(const uint8_t *d, Py_ssize_t *p, Py_ssize_t end, int depth)
{
    Py_ssize_t q = *p;
    if (q + 10 > end)
        return NOT_SURE;
    uint8_t k = d[q];
    PyObject *kind = table_get(T_kind_names, k);
    if (!kind)
        return NULL;
    int8_t ident = (int8_t)d[q + 9];
    PyObject *desc = Py_BuildValue("{s:i,s:N,s:i}", "class_id", (int)be(d + q + 1, 2), "instance_id",
                                   obis_str(d + q + 3), k == 3 ? "method_id" : "attribute_id", (int)ident);
    if (!desc)
        return NULL;
    q += 10;
    PyObject *sel;
    if (k == 4 || k == 5) {
        if (q >= end) {
            Py_DECREF(desc);
            return NOT_SURE;
        }
        uint8_t selector = d[q];
        PyObject *params = axdr_data(d, q + 1, end, depth, &q);
        if (!params) {
            Py_DECREF(desc);
            return NULL;
        }
        sel = Py_BuildValue("{s:i,s:N}", "selector", selector, "parameters", params);
    } else {
        sel = Py_None;
        Py_INCREF(sel);
    }
    if (!sel) {
        Py_DECREF(desc);
        return NULL;
    }
    *p = q;
    return Py_BuildValue("{s:O,s:N,s:N}", "kind", kind, "descriptor", desc, "access_selection", sel);
}

typedef PyObject *(*item_fn)(const uint8_t *, Py_ssize_t *, Py_ssize_t, int);

static PyObject *
dlms_data_item(const uint8_t *d, Py_ssize_t *p, Py_ssize_t end, int depth)
{
    return axdr_data(d, *p, end, depth, p);
}

static PyObject *
dlms_result(const uint8_t *d, Py_ssize_t *p, Py_ssize_t end, int depth)
{
    if (*p + 2 > end)
        return NOT_SURE;
    uint8_t k = d[*p];
    PyObject *kind = table_get(T_kind_names, k);
    if (!kind)
        return NULL;
    PyObject *result = table_get(k == 3 ? T_action_results : T_access_results, d[*p + 1]);
    if (!result)
        return NULL;
    *p += 2;
    return Py_BuildValue("{s:O,s:O}", "kind", kind, "result", result);
}

/* a BER-counted list of items */
static PyObject *
dlms_list(const uint8_t *d, Py_ssize_t *p, Py_ssize_t end, item_fn fn)
{
    Py_ssize_t count, q;
    if (ber_full(d, *p, end, &count, &q) < 0 || count > end - q)
        return NOT_SURE;
    PyObject *items = PyList_New(count);
    if (!items)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = fn(d, &q, end, 0);
        if (!item) {
            Py_DECREF(items);
            return NULL;
        }
        PyList_SET_ITEM(items, i, item);
    }
    *p = q;
    return items;
}

PyDoc_STRVAR(decode_dlms_doc, "decode_dlms(data) -> value | None\n\n"
             "The JSON value of a D9/DA/0F APDU as the declarations give it (without Blue Book names); None "
             "when not sure.");

static PyObject *
decode_dlms(const uint8_t *d, Py_ssize_t end)
{
    if (end < 6 || !T_kind_names || !T_access_results || !T_action_results)
        return NOT_SURE;
    uint8_t tag = d[0];
    if (tag != 0xD9 && tag != 0xDA && tag != 0x0F)
        return NOT_SURE;
    Py_ssize_t size, p;
    if (ber_full(d, 5, end, &size, &p) < 0 || size > end - p)
        return NOT_SURE;
    PyObject *r = PyDict_New(), *specs = NULL;
    if (!r)
        return NULL;
    if (put(r, "long_invoke_id_and_priority", hex_upper(d + 1, 4)) < 0
        || put(r, "date_time", hex_upper(d + p, size)) < 0)
        goto fail;
    p += size;
    if (tag == 0x0F) {
        if (put(r, "notification_body", axdr_data(d, p, end, 0, &p)) < 0)
            goto fail;
    } else {
        if (tag == 0xDA) {
            if (p >= end || d[p] > 1)
                goto fail;
            if (d[p++] == 0) {
                specs = Py_None;
                Py_INCREF(specs);
            }
        }
        if (!specs)
            specs = dlms_list(d, &p, end, dlms_spec);
        if (put(r, "request_specifications", specs) < 0 || put(r, "data", dlms_list(d, &p, end, dlms_data_item)) < 0)
            goto fail;
        if (tag == 0xDA && put(r, "results", dlms_list(d, &p, end, dlms_result)) < 0)
            goto fail;
    }
    if (p != end)
        goto fail;
    return r;
fail:
    Py_DECREF(r);
    return NULL;
}

static PyObject *
py_decode_dlms(PyObject *self, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = decode_dlms(b.buf, b.len);
    PyBuffer_Release(&b);
    return sure(r);
}

/* ---------------------------------------------------------------------------------------------- GBZ */

PyDoc_STRVAR(gbz_split_doc, "gbz_split(buf, pos, end, n) -> ([(ctl, cluster, start, end), ...], next) | None\n\n"
             "The bounds of n GBZ components (ctl | cluster | length | body) from pos, as gbz._parse_components "
             "walks them; None when any header is wrong (the Python path words the error).");

static PyObject *
py_gbz_split(PyObject *self, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t pos, end, n;
    if (!PyArg_ParseTuple(args, "y*nnn", &b, &pos, &end, &n))
        return NULL;
    PyObject *out = NULL;
    const uint8_t *d = b.buf;
    if (pos < 0 || end > b.len || n < 0 || n > 255)
        goto done;
    out = PyList_New(n);
    if (!out)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (pos + 5 > end)
            goto not_sure;
        uint8_t ctl = d[pos];
        if ((ctl & 1) && i != n - 1)
            goto not_sure;
        Py_ssize_t start = pos + 5, cend = start + (Py_ssize_t)be(d + pos + 3, 2);
        if (cend > end)
            goto not_sure;
        PyObject *t = Py_BuildValue("(iinn)", ctl, (int)be(d + pos + 1, 2), start, cend);
        if (!t)
            goto not_sure;
        PyList_SET_ITEM(out, i, t);
        pos = cend;
    }
    out = Py_BuildValue("(Nn)", out, pos);
    goto done;
not_sure:
    Py_CLEAR(out);
done:
    PyBuffer_Release(&b);
    return sure(out);
}

/* ---------------------------------------------------------------------------------------------- CRC-16/X.25 */

static uint16_t CRC_TABLE[8][256];

static void
crc_init(void)
{
    for (int i = 0; i < 256; i++) {
        uint16_t c = (uint16_t)i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x8408 : c >> 1;
        CRC_TABLE[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            CRC_TABLE[t][i] = (CRC_TABLE[t - 1][i] >> 8) ^ CRC_TABLE[0][CRC_TABLE[t - 1][i] & 0xFF];
}

/* the raw (reflected) register update, slice-by-8 */
static uint16_t
crc_update(uint16_t crc, const uint8_t *p, Py_ssize_t n)
{
    while (n >= 8) {
        uint16_t a = crc ^ (uint16_t)(p[0] | (p[1] << 8));
        crc = CRC_TABLE[7][a & 0xFF] ^ CRC_TABLE[6][a >> 8] ^ CRC_TABLE[5][p[2]] ^ CRC_TABLE[4][p[3]]
              ^ CRC_TABLE[3][p[4]] ^ CRC_TABLE[2][p[5]] ^ CRC_TABLE[1][p[6]] ^ CRC_TABLE[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ CRC_TABLE[0][(crc ^ *p++) & 0xFF];
    return crc;
}

static uint16_t
x25(const uint8_t *p, Py_ssize_t n)
{
    return crc_update(0xFFFF, p, n) ^ 0xFFFF;
}

PyDoc_STRVAR(crc16_x25_doc, "crc16_x25(data, crc=0) -> int\n\n"
             "CRC-16/X.25 of data, continuing from a previous result crc (crcmod's calling convention: "
             "x25(b) == crc16_x25(b), x25(b2, x25(b1)) == x25(b1 + b2)). Check: b'123456789' -> 0x906E.");

static PyObject *
py_crc16_x25(PyObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned int crc = 0;
    if (!PyArg_ParseTuple(args, "y*|I", &b, &crc))
        return NULL;
    uint16_t reg = (uint16_t)((crc & 0xFFFF) ^ 0xFFFF);
    if (b.len > 4096) {
        Py_BEGIN_ALLOW_THREADS
        reg = crc_update(reg, b.buf, b.len);
        Py_END_ALLOW_THREADS
    } else {
        reg = crc_update(reg, b.buf, b.len);
    }
    PyBuffer_Release(&b);
    return PyLong_FromLong(reg ^ 0xFFFF);
}

/* ---------------------------------------------------------------------------------------------- framing */
/* Deframer `_try` helpers: (1, payload, wire_length, end, channel) for a complete, valid frame at pos,
 * (0,) when more bytes are needed, None for anything else (the Python `_try` then decides and words it). */

static int
hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* 1..maxd digits then ':' at p: 1 ok, 0 need more, -1 error */
static int
digits(const uint8_t *b, Py_ssize_t p, Py_ssize_t n, int maxd, long *value, Py_ssize_t *next)
{
    Py_ssize_t j = p;
    long v = 0;
    while (j < n && j - p <= maxd && b[j] >= '0' && b[j] <= '9') {
        v = v * 10 + (b[j] - '0');
        j++;
    }
    if (j >= n && j - p <= maxd)
        return 0;
    if (j == p || j - p > maxd || b[j] != ':')
        return -1;
    *value = v;
    *next = j + 1;
    return 1;
}

static PyObject *
gfi_try(const uint8_t *b, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t max_frame)
{
    static const uint8_t head[] = "GBCS:DATA#";
    Py_ssize_t p = pos;
    for (int i = 0; i < 10; i++, p++) {
        if (p >= n)
            return Py_BuildValue("(i)", 0);
        if (b[p] != head[i])
            return NOT_SURE;
    }
    long channel, length;
    int r = digits(b, p, n, 3, &channel, &p);
    if (r <= 0)
        return r == 0 ? Py_BuildValue("(i)", 0) : NOT_SURE;
    r = digits(b, p, n, 7, &length, &p);
    if (r <= 0)
        return r == 0 ? Py_BuildValue("(i)", 0) : NOT_SURE;
    Py_ssize_t end = p + 2 * (Py_ssize_t)length + 2;
    if (end - pos > max_frame)
        return NOT_SURE;
    if (n < end)
        return Py_BuildValue("(i)", 0);
    if (b[end - 2] != '\r' || b[end - 1] != '\n')
        return NOT_SURE;
    PyObject *payload = PyBytes_FromStringAndSize(NULL, length);
    if (!payload)
        return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(payload);
    for (long i = 0; i < length; i++) {
        int hi = hexval(b[p + 2 * i]), lo = hexval(b[p + 2 * i + 1]);
        if (hi < 0 || lo < 0) {
            Py_DECREF(payload);
            return NOT_SURE;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return Py_BuildValue("(iNnnl)", 1, payload, end - pos, end, channel);
}

PyDoc_STRVAR(gfi_try_doc, "gfi_try(buf, pos, n, max_frame) -> (1, payload, wire_length, end, channel) | (0,) | None");

static PyObject *
py_gfi_try(PyObject *self, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t pos, n, max_frame;
    if (!PyArg_ParseTuple(args, "y*nnn", &b, &pos, &n, &max_frame))
        return NULL;
    PyObject *r = (pos >= 0 && n <= b.len && pos < n) ? gfi_try(b.buf, pos, n, max_frame) : NULL;
    PyBuffer_Release(&b);
    return sure(r);
}

/* an HDLC address at p (1, 2 or 4 bytes, extension bit in the last): its length, or -1 */
static int
hdlc_address(const uint8_t *b, Py_ssize_t p, Py_ssize_t end, long *value)
{
    long v = 0;
    for (int i = 0; i < 4 && p + i < end; i++) {
        v = (v << 7) | (b[p + i] >> 1);
        if (b[p + i] & 1) {
            if (i == 2)
                return -1;
            *value = v;
            return i + 1;
        }
    }
    return -1;
}

/* (1, info, wire_length, end, dest, src, control, segmented, dest_len, src_len) | (0,) | None */
static PyObject *
hdlc_try(const uint8_t *b, Py_ssize_t pos, Py_ssize_t n, Py_ssize_t max_frame)
{
    while (pos + 1 < n && b[pos + 1] == 0x7E)
        pos++;
    if (n - pos < 3)
        return n - pos == 1 ? NOT_SURE : Py_BuildValue("(i)", 0);
    unsigned fmt = ((unsigned)b[pos + 1] << 8) | b[pos + 2];
    if (fmt >> 12 != 0xA)
        return NOT_SURE;
    Py_ssize_t length = fmt & 0x7FF;
    if (length < 7 || length + 2 > max_frame)
        return NOT_SURE;
    Py_ssize_t end = pos + length + 1;
    if (end >= n)
        return Py_BuildValue("(i)", 0);
    if (b[end] != 0x7E)
        return NOT_SURE;
    const uint8_t *body = b + pos + 1;   /* format .. FCS */
    unsigned fcs = b[end - 2] | (b[end - 1] << 8);
    if (x25(body, length - 2) != fcs)
        return NOT_SURE;
    long dest, src;
    int dl = hdlc_address(body, 2, length, &dest);
    if (dl < 0)
        return NOT_SURE;
    int sl = hdlc_address(body, 2 + dl, length, &src);
    if (sl < 0)
        return NOT_SURE;
    Py_ssize_t hlen = 3 + dl + sl;
    Py_ssize_t rest = length - hlen - 2;
    if (rest < 0 || (rest > 0 && rest <= 2))
        return NOT_SURE;
    PyObject *info;
    if (rest == 0) {
        info = PyBytes_FromStringAndSize("", 0);
    } else {
        unsigned hcs = body[hlen] | (body[hlen + 1] << 8);
        if (x25(body, hlen) != hcs)
            return NOT_SURE;
        info = PyBytes_FromStringAndSize((const char *)body + hlen + 2, rest - 2);
    }
    if (!info)
        return NULL;
    return Py_BuildValue("(iNnnlllOii)", 1, info, length + 2, end, dest, src, (long)body[hlen - 1],
                         (fmt & 0x800) ? Py_True : Py_False, dl, sl);
}

PyDoc_STRVAR(hdlc_try_doc, "hdlc_try(buf, pos, n, max_frame) -> (1, info, wire_length, end, dest, src, control, "
             "segmented, dest_len, src_len) | (0,) | None");

static PyObject *
py_hdlc_try(PyObject *self, PyObject *args)
{
    Py_buffer b;
    Py_ssize_t pos, n, max_frame;
    if (!PyArg_ParseTuple(args, "y*nnn", &b, &pos, &n, &max_frame))
        return NULL;
    PyObject *r = (pos >= 0 && n <= b.len && pos < n) ? hdlc_try(b.buf, pos, n, max_frame) : NULL;
    PyBuffer_Release(&b);
    return sure(r);
}

/* ---------------------------------------------------------------------------------------------- crypto */

#ifdef GBCS_FAST_CRYPTO
static const uint8_t ALGORITHM_ID[7] = {0x60, 0x85, 0x74, 0x06, 0x08, 0x03, 0x00};

/* KDF (GBCS 4.3.3.3) then GMAC (AES-128-GCM, empty plaintext), IV = originator || 00000000,
 * AAD = 11 00 00 00 00 00 || signing; 12-byte tag. 0 on success. */
static int
kdf_gmac(const uint8_t *z, const uint8_t *orig, const uint8_t *recip, int mode, uint64_t counter,
         const uint8_t *aad, Py_ssize_t aad_len, uint8_t tag[16])
{
    uint8_t msg[4 + 32 + 33], digest[32], iv[12];
    size_t o = 0;
    memcpy(msg, "\x00\x00\x00\x01", 4); o += 4;
    memcpy(msg + o, z, 32); o += 32;
    memcpy(msg + o, ALGORITHM_ID, 7); o += 7;
    memcpy(msg + o, orig, 8); o += 8;
    msg[o++] = 0x09;
    msg[o++] = (uint8_t)mode;
    for (int i = 7; i >= 0; i--)
        msg[o++] = (uint8_t)(counter >> (8 * i));
    memcpy(msg + o, recip, 8); o += 8;
    unsigned int dlen = 0;
    if (EVP_Digest(msg, o, digest, &dlen, EVP_sha256(), NULL) != 1)
        return -1;
    memcpy(iv, orig, 8);
    memset(iv + 8, 0, 4);
    static const uint8_t prefix[6] = {0x11, 0, 0, 0, 0, 0};
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int outl, ok = ctx != NULL
        && EVP_EncryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, NULL, NULL) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1
        && EVP_EncryptInit_ex(ctx, NULL, NULL, digest, iv) == 1
        && EVP_EncryptUpdate(ctx, NULL, &outl, prefix, 6) == 1
        && (aad_len == 0 || EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)aad_len) == 1)
        && EVP_EncryptFinal_ex(ctx, tag, &outl) == 1
        && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    memset(digest, 0, sizeof digest);
    memset(msg, 0, sizeof msg);
    return ok ? 0 : -1;
}

PyDoc_STRVAR(message_mac_doc, "message_mac(z, originator, recipient, mode, counter, general_signing) -> bytes | None\n\n"
             "The 12-byte GBCS message MAC (KDF + GMAC through libcrypto); None when an argument is out of range "
             "(the Python path raises the error).");

static PyObject *
py_message_mac(PyObject *self, PyObject *args)
{
    Py_buffer z, o, r, s;
    int mode;
    unsigned long long counter;
    if (!PyArg_ParseTuple(args, "y*y*y*iKy*", &z, &o, &r, &mode, &counter, &s))
        return NULL;
    PyObject *res = NULL;
    uint8_t tag[16];
    if (z.len == 32 && o.len == 8 && r.len == 8 && mode >= 1 && mode <= 4 && s.len < INT32_MAX) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = kdf_gmac(z.buf, o.buf, r.buf, mode, counter, s.buf, s.len, tag);
        Py_END_ALLOW_THREADS
        if (rc == 0)
            res = PyBytes_FromStringAndSize((const char *)tag, MAC_LENGTH);
        else
            PyErr_SetString(PyExc_RuntimeError, "libcrypto KDF/GMAC failed");
    }
    PyBuffer_Release(&z);
    PyBuffer_Release(&o);
    PyBuffer_Release(&r);
    PyBuffer_Release(&s);
    return sure(res);
}
#endif

/* ---------------------------------------------------------------------------------------------- module */

PyDoc_STRVAR(set_tables_doc, "set_tables(name, table): hand over a name table (cra_names, use_cases, "
             "kind_names, access_results, action_results), {int: str}.");

static PyObject *
py_set_tables(PyObject *self, PyObject *args)
{
    const char *name;
    PyObject *table;
    if (!PyArg_ParseTuple(args, "sO!", &name, &PyDict_Type, &table))
        return NULL;
    PyObject **slot = !strcmp(name, "cra_names") ? &T_cra_names
                    : !strcmp(name, "use_cases") ? &T_use_cases
                    : !strcmp(name, "kind_names") ? &T_kind_names
                    : !strcmp(name, "access_results") ? &T_access_results
                    : !strcmp(name, "action_results") ? &T_action_results : NULL;
    if (!slot) {
        PyErr_Format(PyExc_ValueError, "unknown table %s", name);
        return NULL;
    }
    PyObject *copy = PyDict_Copy(table);
    if (!copy)
        return NULL;
    Py_XSETREF(*slot, copy);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_axdr_names_doc, "set_axdr_names({tag: name}): the A-XDR type names by tag (axdr.DATA_TYPES).");

static PyObject *
py_set_axdr_names(PyObject *self, PyObject *arg)
{
    if (!PyDict_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "expected a dict");
        return NULL;
    }
    for (int t = 0; t < 34; t++) {
        PyObject *k = PyLong_FromLong(t);
        if (!k)
            return NULL;
        PyObject *v = PyDict_GetItemWithError(arg, k);
        Py_DECREF(k);
        if (!v && PyErr_Occurred())
            return NULL;
        /* a tag without a name is not sure; compact-array (19) is kept apart (never a leaf of a description) */
        if (v && !PyUnicode_Check(v))
            v = NULL;
        if (t == 19) {
            Py_XINCREF(v);
            Py_XSETREF(S_compact_name, v);
            v = NULL;
        }
        Py_XINCREF(v);
        Py_XSETREF(AXDR_NAMES[t], v);
    }
    Py_RETURN_NONE;
}

static PyObject *
py_decode_message_envelope(PyObject *self, PyObject *arg)
{
    return py_split_envelope(self, arg);
}

static PyMethodDef methods[] = {
    {"split_envelope", py_split_envelope, METH_O, split_envelope_doc},
    {"decode_envelope", py_decode_message_envelope, METH_O, split_envelope_doc},
    {"decode_dlms", py_decode_dlms, METH_O, decode_dlms_doc},
    {"axdr_parse", py_axdr_parse, METH_VARARGS, axdr_parse_doc},
    {"gbz_split", py_gbz_split, METH_VARARGS, gbz_split_doc},
    {"crc16_x25", py_crc16_x25, METH_VARARGS, crc16_x25_doc},
    {"gfi_try", py_gfi_try, METH_VARARGS, gfi_try_doc},
    {"hdlc_try", py_hdlc_try, METH_VARARGS, hdlc_try_doc},
#ifdef GBCS_FAST_CRYPTO
    {"message_mac", py_message_mac, METH_VARARGS, message_mac_doc},
#endif
    {"set_tables", py_set_tables, METH_VARARGS, set_tables_doc},
    {"set_axdr_names", py_set_axdr_names, METH_O, set_axdr_names_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "protocols._fast",
    "Optional C fast path of the GBCS codec: same values as the Python paths, or None (not sure).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__fast(void)
{
    crc_init();
    S_type = PyUnicode_InternFromString("type");
    S_value = PyUnicode_InternFromString("value");
    S_length = PyUnicode_InternFromString("length");
    S_bits = PyUnicode_InternFromString("bits");
    S_array = PyUnicode_InternFromString("array");
    S_structure = PyUnicode_InternFromString("structure");
    S_count = PyUnicode_InternFromString("count");
    S_type_description = PyUnicode_InternFromString("type_description");
    S_values = PyUnicode_InternFromString("values");
    if (!S_type || !S_value || !S_length || !S_bits || !S_array || !S_structure || !S_count || !S_type_description
        || !S_values)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
#ifdef GBCS_FAST_CRYPTO
    PyModule_AddIntConstant(m, "HAVE_CRYPTO", 1);
    PyModule_AddStringConstant(m, "OPENSSL_VERSION", OPENSSL_VERSION_TEXT);
#else
    PyModule_AddIntConstant(m, "HAVE_CRYPTO", 0);
#endif
    return m;
}
