"""Write the OpenAPI document the server serves to ``docs/spec/openapi.json``.

    python tools/export_openapi.py          # (re)write docs/spec/openapi.json
    python tools/export_openapi.py --check  # exit 1 if the committed file is out of date

The app is built on a throw-away data directory with the embedded default; building the
schema opens no database or Redis connection. ``tests/unit/test_docs.py`` runs the same
comparison as ``--check``, so a route change without a regenerated spec fails the tests.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "docs" / "spec" / "openapi.json"

if str(ROOT) not in sys.path:  # `python tools/export_openapi.py` without an installed package
    sys.path.insert(0, str(ROOT))


def build_schema(**overrides: Any) -> dict[str, Any]:
    """The OpenAPI document of an app built from fixed settings (none read from the shell).

    Settings that could change how the app is assembled are pinned, so that a developer's
    ``SESSION_SYNC_*`` environment cannot make the export differ or fail.
    """
    from server.app import create_app
    from server.config import Settings
    from server.ops.openapi import complete

    with tempfile.TemporaryDirectory(prefix="session-sync-openapi-") as tmp:
        fields: dict[str, Any] = {
            "data_dir": Path(tmp),
            "secret_key": "x" * 40,
            "environment": "development",
            "database_url": None,
            "redis_url": None,
            "smtp_url": None,
            "trusted_proxies": [],
        }
        app = create_app(Settings(**(fields | overrides)))
        schema: dict[str, Any] = complete(app.openapi_schema.to_schema())
        return schema


def render(schema: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the file is out of date"
    )
    parser.add_argument(
        "--output", type=Path, default=SPEC_PATH, help=f"default: {SPEC_PATH.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)
    expected = render(build_schema())
    output: Path = args.output

    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current == expected:
            print(f"{output} is up to date")
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            fromfile=f"{output} (committed)",
            tofile="served by the app",
            n=2,
        )
        sys.stdout.writelines(list(diff)[:200])
        print(
            f"\n{output} differs from the OpenAPI document the app serves; "
            "run `python tools/export_openapi.py` and commit the result",
            file=sys.stderr,
        )
        return 1

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(expected, encoding="utf-8")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
