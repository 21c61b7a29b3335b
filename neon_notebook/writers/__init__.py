"""Writing Arrow data into PostgreSQL (private; ``Session.write`` will be the public face).

The pieces, one job each:

- :mod:`._pgtypes`: which PostgreSQL type holds each Arrow type exactly (the
  ``CREATE TABLE`` mapping), and which Arrow types may be encoded into an
  existing column's type (:func:`._pgtypes.target`, :func:`._pgtypes.create_target`).
- :mod:`._encode`: :class:`._encode.Encoder`, one record batch at a time into
  binary COPY blocks of bounded size, through the C extension ``_pgcopy_encode``
  (the mirror of the readers' decoder; the GIL is released while it encodes).

A write path sends ``HEADER``, the blocks of every batch, then ``TRAILER`` with
psycopg's ``cursor.copy("COPY t (cols) FROM STDIN (FORMAT binary)")``.
"""
