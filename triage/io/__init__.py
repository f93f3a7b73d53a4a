"""Tables in and out, without losing a row: the batch and the CLI read and write through these.

* ``tables``: read/write CSV, XLSX, JSONL, Parquet whole; text-column detection.
* ``streams``: a file read in chunks, every row keeping its line number.
* ``sinks``: writers that append chunks, the file appearing only when complete; a run's ``Target``.
* ``databases``: a query as input, a new table as output.

Imports only the foundations.
"""
