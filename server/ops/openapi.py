"""What the generated OpenAPI document cannot know by itself, added in one place: the bearer
security scheme, and the bodies of the routes that read JSON or msgpack by hand."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin

from server.sync.schemas import ChunksIn, PushIn, SnapshotIn

PUBLIC = ("/healthz", "/readyz", "/metrics", "/schema", "/.well-known", "/v1/auth/email")
BODIES: dict[tuple[str, str], type[msgspec.Struct]] = {
    ("/v1/docs/{doc_id}/updates", "post"): PushIn,
    ("/v1/docs/{doc_id}/snapshot", "put"): SnapshotIn,
    ("/v1/transcripts/{transcript_id}/chunks", "post"): ChunksIn,
}
_REF = "#/components/schemas/{name}"


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """The document with security and hand-read request bodies described."""
    doc = copy.deepcopy(schema)
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from /v1/auth/email/verify or /v1/auth/token.",
    }
    _, defs = msgspec.json.schema_components(list(BODIES.values()), ref_template=_REF)
    for name, definition in defs.items():
        components.setdefault("schemas", {}).setdefault(name, definition)
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            if not path.startswith(PUBLIC) and path != "/v1/auth/token":
                operation["security"] = [{"bearer": []}]
            body = BODIES.get((path, method))
            if body is not None:
                ref = {"$ref": _REF.format(name=body.__name__)}
                operation["requestBody"] = {
                    "required": True,
                    "description": "JSON (ciphertext as base64) or msgpack (raw bytes).",
                    "content": {
                        "application/json": {"schema": ref},
                        "application/msgpack": {"schema": ref},
                    },
                }
    return doc


class CompleteJsonRenderPlugin(JsonRenderPlugin):
    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, complete(openapi_schema))
