/* exact_dedup's exact form of ASCII texts, compiled: the same bytes as `distill.curation.textnorm.exact_forms`'s
 * pure-Python path (ASCII whitespace, \x1c-\x1f included, as word breaks; uppercase lowercased; words joined by one
 * space), in two passes over each text that the compiler vectorises instead of an encode, a translate, a numpy
 * search for runs of spaces and, for the texts that have them, a split and a join. Built at -O3 for x86-64's
 * baseline (SSE2), the form and its XXH3 take 0.79-0.80 against 1.88-1.94 µs a 1.5 KB bench text (bench/RESULTS.md).
 *
 * Built as an optional extension: where no C compiler is at hand, distill installs without it and textnorm takes
 * its pure-Python path, which gives the same forms.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Whether `c` is a word break of the exact form: the ASCII whitespace `str.split` knows (\t\n\v\f\r, the
 * separators \x1c-\x1f, the space). */
static inline unsigned char is_break(unsigned char c) {
    return (unsigned char)((c == ' ') | ((unsigned char)(c - '\t') < 5) | ((unsigned char)(c - 0x1c) < 4));
}

/* The exact form of `length` ASCII bytes at `text`, written to `form` (room for `length` bytes); returns its
 * length. */
static Py_ssize_t exact_form(const unsigned char *text, Py_ssize_t length, unsigned char *form) {
    if (length == 0) {
        return 0;
    }
    /* Whether two breaks meet anywhere or one leads or ends the text: only then has the form fewer bytes. */
    unsigned char runs = is_break(text[0]) | is_break(text[length - 1]);
    for (Py_ssize_t i = 1; i < length; i++) {
        runs |= is_break(text[i]) & is_break(text[i - 1]);
    }
    /* Every break a space, every uppercase letter lowercase: arithmetic, no branch, so the loop vectorises. */
    for (Py_ssize_t i = 0; i < length; i++) {
        unsigned char c = text[i];
        unsigned char is_space = (unsigned char)-is_break(c);
        unsigned char lower = (unsigned char)(((unsigned char)(c - 'A') < 26) << 5);
        form[i] = (unsigned char)(((c | lower) & ~is_space) | (' ' & is_space));
    }
    if (!runs) {
        return length;
    }
    /* Runs of spaces become one, and none is kept at either end. */
    Py_ssize_t kept = 0;
    Py_ssize_t after_space = 1;
    for (Py_ssize_t i = 0; i < length; i++) {
        Py_ssize_t space = form[i] == ' ';
        form[kept] = form[i];
        kept += 1 - (space & after_space);
        after_space = space;
    }
    return (kept > 0 && form[kept - 1] == ' ') ? kept - 1 : kept;
}

static PyObject *ascii_exact_forms(PyObject *module, PyObject *texts) {
    if (!PyList_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "ascii_exact_forms takes a list of str");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(texts);
    PyObject *forms = PyList_New(count);
    if (forms == NULL) {
        return NULL;
    }
    Py_ssize_t capacity = 0;
    unsigned char *scratch = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *text = PyList_GET_ITEM(texts, i);
        if (!PyUnicode_Check(text)) {
            PyErr_SetString(PyExc_TypeError, "ascii_exact_forms takes a list of str");
            goto failed;
        }
        if (!PyUnicode_IS_ASCII(text)) {
            PyList_SET_ITEM(forms, i, Py_NewRef(Py_None));  /* the caller's general path normalises it */
            continue;
        }
        Py_ssize_t length = PyUnicode_GET_LENGTH(text);
        if (length > capacity) {
            unsigned char *grown = PyMem_Realloc(scratch, (size_t)length);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto failed;
            }
            scratch = grown;
            capacity = length;
        }
        Py_ssize_t kept = exact_form((const unsigned char *)PyUnicode_DATA(text), length, scratch);
        PyObject *form = PyBytes_FromStringAndSize((const char *)scratch, kept);
        if (form == NULL) {
            goto failed;
        }
        PyList_SET_ITEM(forms, i, form);
    }
    PyMem_Free(scratch);
    return forms;
failed:
    PyMem_Free(scratch);
    Py_DECREF(forms);
    return NULL;
}

static PyMethodDef methods[] = {
    {"ascii_exact_forms", ascii_exact_forms, METH_O,
     "ascii_exact_forms(texts) -> list: each ASCII text's exact form as bytes, None for a text that is not ASCII."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_exact_forms", NULL, 0, methods};

PyMODINIT_FUNC PyInit__exact_forms(void) {
    return PyModuleDef_Init(&module);
}
