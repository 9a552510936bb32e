"""A shape's log: entries at Electric offsets in checksummed frames, on a file, in memory,
or followed read-only from another process's file. Knows nothing of shapes or Postgres."""
