"""Writing Arrow data into PostgreSQL with binary COPY (``Session.write`` is the public face).

The pieces, one job each, in the order a write uses them:

- :mod:`._input`: what ``write`` accepts (frames, tables, streams, Parquet files)
  as one schema and a stream of record batches (:func:`source`);
- :mod:`._table`: the table's name as identifiers, and what the catalog says of it;
- :mod:`._pgtypes`: which PostgreSQL type holds each Arrow type exactly (for
  ``CREATE TABLE``), and which Arrow types go into an existing column's type;
- :mod:`._plan`: the statements of each mode around the COPY;
- :mod:`._encode`: record batches into binary COPY blocks, through the C
  extension ``_pgcopy_encode`` (the mirror of the readers' decoder, GIL released);
- :mod:`._send`: the COPY itself, the next block encoded while the last is sent;
- :mod:`._write`: one transaction, its COMMIT verified, the one retry (:func:`write`).
"""

from ._input import Source, source
from ._write import Written, write

__all__ = ["Source", "Written", "source", "write"]
