"""The execution engine: pure execution of pipelines, with seams for the journal (no I/O here)."""
