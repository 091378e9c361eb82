"""One module per run kind, each declaring its ``SPEC`` (``labeling.runs.spec.RunSpec``), its start service
and its admin form."""
