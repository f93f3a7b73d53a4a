"""Batch reclassification of files and database tables: chunks, all cores, resumable.

* ``runner``: :func:`~triage.batch.runner.classify_file` and ``classify_source`` (config, targets,
  the local process-pool engine).
* ``dask_engine``: the same chunks on a Dask cluster. ``chunk``: one chunk's work, run by both.
* ``checkpoint``: the work directory (manifest, one part per chunk); ``changes``: the change report.

Sits above the pipeline and ``triage.io``; the CLI calls it.
"""
