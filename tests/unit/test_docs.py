"""The documents that describe the server stay in step with the code.

- docs/configuration.md has one table row per Settings field and names no other variable;
- docs/errors.md documents every problem type of server/errors.py, and no other;
- docs/spec/openapi.json is exactly what the app serves (build it with tools/export_openapi.py);
- docs/spec/api.md mentions every path of that OpenAPI document;
- relative links between the documents resolve.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from litestar.testing import TestClient

from server.app import create_app
from server.config import Settings
from server.errors import TYPE_PREFIX, AppError

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
ERRORS = DOCS / "errors.md"
API = DOCS / "spec" / "api.md"
SPEC_README = DOCS / "spec" / "README.md"
OPENAPI = DOCS / "spec" / "openapi.json"
SECRET = "x" * 40


def _load_exporter() -> ModuleType:
    path = ROOT / "tools" / "export_openapi.py"
    spec = importlib.util.spec_from_file_location("export_openapi", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("export_openapi", module)
    spec.loader.exec_module(module)
    return module


exporter = _load_exporter()


# -- configuration ----------------------------------------------------------------------


def _env_names() -> dict[str, str]:
    """Settings field name -> the environment variable that sets it."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names[name] = alias if isinstance(alias, str) else f"{prefix}{name}".upper()
    return names


def test_configuration_documents_every_setting() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(env for env in _env_names().values() if f"`{env}`" not in text)
    assert not missing, f"docs/configuration.md does not document {missing}"


def test_configuration_has_one_table_row_per_setting() -> None:
    lines = CONFIGURATION.read_text(encoding="utf-8").splitlines()
    for env in _env_names().values():
        rows = [line for line in lines if line.startswith(f"| `{env}` |")]
        assert len(rows) == 1, f"expected one table row for {env}, found {len(rows)}"
        cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
        assert len(cells) == 4 and all(cells), f"row of {env} needs name, type, default, text"


def test_configuration_names_no_unknown_variable() -> None:
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    named = set(
        re.findall(rf"\b{re.escape(prefix)}[A-Z0-9_]*[A-Z0-9]\b", CONFIGURATION.read_text())
    )
    unknown = sorted(named - set(_env_names().values()))
    assert not unknown, f"docs/configuration.md names variables that are not settings: {unknown}"


# -- problem types ----------------------------------------------------------------------


def _error_classes() -> list[type[AppError]]:
    found, todo = [], [AppError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_errors_document_every_problem_type() -> None:
    text = ERRORS.read_text(encoding="utf-8")
    missing = sorted(
        f"{cls.__name__} ({TYPE_PREFIX}{cls.slug})"
        for cls in _error_classes()
        if f"`{TYPE_PREFIX}{cls.slug}`" not in text
    )
    assert not missing, f"docs/errors.md does not document {missing}"


def test_errors_document_the_status_of_every_problem_type() -> None:
    lines = ERRORS.read_text(encoding="utf-8").splitlines()
    for cls in _error_classes():
        headings = [line for line in lines if line.startswith("## ") and f"`{cls.slug}`" in line]
        assert len(headings) == 1, f"expected one `## ` heading naming `{cls.slug}`"
        assert str(cls.status) in headings[0], f"the heading of {cls.slug} lacks {cls.status}"


@pytest.mark.parametrize("document", [ERRORS, API, SPEC_README], ids=lambda p: p.name)
def test_documents_name_only_existing_problem_types(document: Path) -> None:
    slugs = {cls.slug for cls in _error_classes()}
    named = set(re.findall(re.escape(TYPE_PREFIX) + r"([a-z0-9-]*[a-z0-9])", document.read_text()))
    assert not named - slugs, f"{document.name} names unknown problem types {named - slugs}"


# -- the OpenAPI document ---------------------------------------------------------------


def test_committed_openapi_is_what_the_app_serves() -> None:
    expected = exporter.render(exporter.build_schema())
    assert OPENAPI.read_text(encoding="utf-8") == expected, (
        "docs/spec/openapi.json is out of date: run `python tools/export_openapi.py`"
    )


def test_building_the_schema_opens_no_connection(tmp_path: Path) -> None:
    # Unreachable Postgres and Redis: building must not try them, and must give the same
    # document as the embedded default, which must not even create its SQLite file.
    unreachable = exporter.build_schema(
        database_url="postgresql+asyncpg://nobody:nothing@127.0.0.1:9/none",
        redis_url="redis://127.0.0.1:9/0",
    )
    embedded = exporter.build_schema(data_dir=tmp_path)
    assert not (tmp_path / "session-sync.db").exists()
    assert unreachable == embedded


def test_running_app_serves_the_committed_openapi(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, secret_key=SECRET, database_url=None))
    with TestClient(app=app) as client:
        response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(OPENAPI.read_text(encoding="utf-8"))


def test_export_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "openapi.json"
    target.write_text("{}\n")
    assert exporter.main(["--check", "--output", str(target)]) == 1
    assert "python tools/export_openapi.py" in capsys.readouterr().err
    assert exporter.main(["--output", str(target)]) == 0
    assert exporter.main(["--check", "--output", str(target)]) == 0
    assert target.read_text().endswith("}\n")


def test_api_page_covers_every_path() -> None:
    text = API.read_text(encoding="utf-8")
    paths = json.loads(OPENAPI.read_text(encoding="utf-8"))["paths"]
    missing = sorted(
        path
        for path in paths
        if not re.search(r"(?<![\w/.{}-])" + re.escape(path) + r"(?![\w/.{}-])", text)
    )
    assert not missing, f"docs/spec/api.md does not mention {missing}"


# -- links ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document", [CONFIGURATION, ERRORS, API, SPEC_README], ids=lambda p: p.name
)
def test_relative_links_resolve(document: Path) -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text(encoding="utf-8"))
    broken = [
        target
        for target in targets
        if "://" not in target and not (document.parent / target).resolve().exists()
    ]
    assert not broken, f"{document.name} links to missing files: {broken}"


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    validate(json.loads(OPENAPI.read_text()))
