# Cython declarations for fastpath.py (the "augmenting .pxd" of Cython's pure Python
# mode): compiled, FastPath is an extension type and these are its C fields; the
# names are those of FastPath.__slots__; the methods declared below are C methods.
cimport cython

cdef unsigned long long _F_HOST, _F_LENGTH, _F_TE, _F_EXPECT, _F_UPGRADE, _F_SINGLE
cdef unsigned long long F_NO_REPLAY
cdef Py_ssize_t _HIST
cdef unsigned long long _FIELD_SIZES
cdef Py_ssize_t _MAX_FIELD_SIZE

cdef class Clock:
    cdef public double now
    cdef public bytes date

cdef class FastPath:
    cdef public object engine, default, parser, transport, transport_write
    cdef public Clock clock
    cdef public list out, pending
    cdef public object parser_feed, parser_method, parser_keep_alive
    cdef public bint discarding, in_request, closing, retiring, must_close, fresh
    cdef public Py_ssize_t requests
    cdef public double deadline
    cdef public str timeout_kind
    cdef public bytes url, method, read
    cdef public list headers
    cdef public str version
    cdef public Py_ssize_t head_read, header_size, max_header, max_line, max_field, max_fields
    cdef public bint underscores, chunked_body
    cdef public Py_ssize_t header_count, wire, body_size, max_body
    cdef public object body
    cdef public object routed, path, server, location, captures
    cdef public double keepalive_timeout
    cdef public Py_ssize_t keepalive_requests
    cdef public object static
    cdef public list static_stats
    cdef public Py_ssize_t static_index
    cdef public bint static_logs
    cdef public object answered, answered_date
    cdef public bytes answered_bytes
    cdef public bytes replay_data
    cdef public object replay
    cdef public Py_ssize_t completed
    cdef public bint replay_keep_alive, replaying

    # called only from here: C calls, no method lookup (HttpProtocol overrides none)
    cdef _reset_request(self)
    cdef _replay(self)
    cdef str _http_version(self)
    cdef _check_protocol(self)
    cdef object _route(self, bytes host)
    @cython.locals(size=Py_ssize_t, seen="unsigned long long", field="unsigned long long")
    cdef _check_head(self, str version, bint fresh, bytes url)
    cdef bytes _keep_alive_answer(self, object static)
    cpdef bytes _conn_header(self, bint keep_alive)
