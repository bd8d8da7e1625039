"""The service's OpenAPI document, kept in schemas/openapi.json.

Regenerate after changing a route or a shape: `python -m uceindex.service.openapi`
(tests/test_service_schema.py fails while the file is stale).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from uceindex.service.app import create_app
from uceindex.store import Store
from uceindex.store.schema import schemas_dir

FILE = "openapi.json"


def document() -> dict:
    """The OpenAPI document the app serves (built over an empty store)."""
    with tempfile.TemporaryDirectory() as tmp:
        Store.open(tmp, create=True).close()
        return create_app(tmp).openapi()


def render(doc: dict) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def path() -> Path:
    return schemas_dir() / FILE


if __name__ == "__main__":
    path().write_text(render(document()))
    print(f"wrote {path()}")
