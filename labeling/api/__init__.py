"""The REST API under /api/v1/, one module per group of ``urls.py``: ``rating`` (what the rater pages call),
``content`` (projects and their content) and ``data`` (imports, exports, snapshots). Each class parses input,
checks permissions, calls one service or selector and serializes the answer.

One serializer style: serializers are plain module-level classes beside the views that use them, named
``<Thing>Input`` (a request body), ``<Thing>Query`` (query parameters) or ``<Thing>Output``; every response
body goes through its ``Output`` serializer, which is also what the OpenAPI schema shows. The two calls of the
rater's loop (next task, submit) are the exception: they build their bodies as plain values, because passing
them through the serializers costs about 8% of the loop's throughput (bench/rater_loop.py); a test checks that
their bodies have exactly their Output serializers' fields."""
