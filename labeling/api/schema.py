"""What the OpenAPI schema says beyond the views: every operation's error answers, all in the one
``{"message", "extra"}`` shape of ``labeling.errors`` (drf-spectacular documents only the successes)."""

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "description": "What went wrong, for the person who made the request."},
        "extra": {
            "type": "object",
            "additionalProperties": True,
            "description": "Details: the fields and their errors, the line of an import, a request id.",
        },
    },
    "required": ["message", "extra"],
}
ERRORS = {
    "400": "Bad input: the message names the field (or the line of an imported file).",
    "401": "Not signed in: send a token (Authorization: Token <key>) or a session cookie.",
    "403": "Signed in, but not allowed to do this.",
    "404": "No such object among those visible to you.",
    "409": "A conflict with the object's state (a run already going, a report limit reached).",
    "429": "Too many requests: wait for the number of seconds in Retry-After.",
    "500": "A bug on our side: the message gives an id that the server's log repeats.",
    "503": "The database is not answering: retry after the seconds in Retry-After.",
}

TOO_LARGE = "The upload is larger than the server takes (IMPORT_MAX_BYTES); nothing was stored."


def error_responses(result, generator, request, public):
    """Postprocessing hook: the Error component, and each error status on every operation that does not
    describe it already."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for status, description in ERRORS.items():
                operation["responses"].setdefault(status, {"description": description, "content": reference})
            if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
                operation["responses"].setdefault("413", {"description": TOO_LARGE, "content": reference})
    return result
