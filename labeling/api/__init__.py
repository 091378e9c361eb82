"""The REST API under /api/v1/, one module per group of ``urls.py``: ``rating`` (what the rater pages call),
``content`` (projects and their content) and ``data`` (imports, exports, snapshots). Each class parses input,
checks permissions, calls one service or selector and serializes the answer with small input and output
serializers."""
