"""Neon's SQL-over-HTTP transport: ``connect(..., transport="http")``, without psycopg.

    _protocol   the wire: URL derivation, request bodies and headers, answers parsed (stdlib only)
    _params     %s / %(name)s -> $n with psycopg's literal types, values as text (stdlib only)
    _client     keep-alive HTTP(S) connections; re-sending what provably did not run (stdlib only)
    _errors     error answers -> psycopg's classes (or errors.SQLError), libpq's excerpt
    _transport  one request per read or execute: the session's settings, the statements, the answer
    _arrow      the answer's text rows -> Arrow through the COPY path's kinds
"""
