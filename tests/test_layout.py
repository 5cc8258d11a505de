"""Import rules from ARCHITECTURE.md, enforced by parsing every module's imports with ast.

1. service/ml/** imports only torch, numpy, PIL, pydantic, the standard library and service.ml.*
   (plus safetensors, the artifact file format the engine contract names)
2. service/** never imports worker.*
3. Only service/api/** imports fastapi (or starlette underneath it). Only service/db/** builds SQL: no other
   module of service/ or worker/ uses sqlalchemy's select/insert/update/delete/text (imported by name or as
   sqlalchemy.<name>)
4. service/client/** imports only the standard library, httpx, pydantic, service.client.*, service.domain and
   service.api.schemas (the wire models, shared with the server; that module imports only pydantic and
   service.domain): no torch, sqlalchemy, celery or matplotlib, so it installs and starts fast. Checked on the
   source and on sys.modules after importing it
5. service/db, storage, serving and reports import only what FOLDER_RULES allows them
Plus: matplotlib is imported only in service/reports/**, and no server module but service/config.py reads a
HEADWISE_* environment variable (every setting is a field of Settings).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "service"
WORKER = ROOT / "worker"

# safetensors: the artifact format named by the engine contract (model.safetensors); a pure tensor-file library.
ML_ALLOWED = {"torch", "numpy", "PIL", "pydantic", "pydantic_core", "typing_extensions", "safetensors"}
# Optional runtimes (ARCHITECTURE.md: "optional runtimes lazily"): the ONNX export and its check
# (service/ml/export.py) need onnx and onnxruntime, but importing the engine must not load them, so they may be
# imported only inside functions, never at module level.
ML_LAZY = {"onnx", "onnxruntime"}
FASTAPI_PACKAGES = {"fastapi", "starlette"}
FASTAPI_ALLOWED = ("service/api/",)
CLIENT_ALLOWED = {"httpx", "pydantic", "pydantic_core", "typing_extensions"}
CLIENT_SERVICE_ALLOWED = ("service.client", "service.domain", "service.api.schemas")
SCHEMAS_ALLOWED = {"pydantic", "pydantic_core", "typing_extensions"}
CLIENT_FORBIDDEN_LOADED = ("torch", "sqlalchemy", "celery", "matplotlib", "fastapi", "numpy", "PIL", "pydantic_settings",
                           "service.config")
SQL_BUILDERS = {"select", "insert", "update", "delete", "text"}
SQL_MODULES = (
    "sqlalchemy",
    "sqlalchemy.sql",
    "sqlalchemy.sql.expression",
    "sqlalchemy.future",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.sqlite",
)


@dataclass(frozen=True)
class Import:
    file: str  # relative to ROOT, posix
    line: int
    module: str  # absolute dotted module ("" when unresolvable)
    names: tuple[str, ...]  # names imported with "from X import a, b"; () for "import X"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def parse_imports(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(ROOT).as_posix()
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(rel, node.lineno, alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(alias.name for alias in node.names)
            if node.level:
                base = _package_of(path).split(".")
                up = node.level - 1
                if up > len(base) or (up == len(base) and not node.module):
                    found.append(Import(rel, node.lineno, "", names))
                    continue
                base = base[: len(base) - up] if up else base
                module = ".".join([*base, node.module] if node.module else base)
                found.append(Import(rel, node.lineno, module, names))
                if not node.module:  # "from . import x" imports submodules x
                    found.extend(Import(rel, node.lineno, f"{module}.{n}", ()) for n in names)
            else:
                found.append(Import(rel, node.lineno, node.module or "", names))
    return found


def _py_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _fmt(imp: Import) -> str:
    what = f"from {imp.module} import {', '.join(imp.names)}" if imp.names else f"import {imp.module}"
    return f"{imp.file}:{imp.line}: {what}"


def test_sources_parse() -> None:
    for path in _py_files(SERVICE) + _py_files(WORKER):
        parse_imports(path)  # a SyntaxError here names the file


def _module_level_import_lines(path: Path) -> set[int]:
    """Lines of imports that run when the module is imported (not inside a function or class body)."""
    lines: set[int] = set()
    todo = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            lines.add(node.lineno)
        elif isinstance(node, ast.If | ast.Try | ast.With):
            todo += [n for field in ("body", "orelse", "finalbody", "handlers") for n in getattr(node, field, [])]
        elif isinstance(node, ast.ExceptHandler):
            todo += node.body
    return lines


def test_ml_imports_only_allowed_packages() -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in _py_files(SERVICE / "ml"):
        eager = _module_level_import_lines(path)
        for imp in parse_imports(path):
            top = _top(imp.module)
            if top in ML_LAZY and imp.line not in eager:
                continue
            if (
                imp.module == ""
                or imp.module == "service"
                or (
                    top == "service"
                    and not (imp.module == "service.ml" or imp.module.startswith("service.ml."))
                )
            ):
                bad.append(_fmt(imp))
            elif top != "service" and top not in ML_ALLOWED and top not in stdlib and top != "__future__":
                bad.append(_fmt(imp))
    assert not bad, "service/ml may import only torch/numpy/PIL/pydantic/stdlib/service.ml:\n" + "\n".join(
        bad
    )


def test_service_never_imports_worker() -> None:
    bad = [
        _fmt(imp)
        for path in _py_files(SERVICE)
        for imp in parse_imports(path)
        if _top(imp.module) == "worker"
    ]
    assert not bad, (
        "service/** must not import worker (enqueue by task name via service/queue.py):\n" + "\n".join(bad)
    )


def test_only_web_layer_imports_fastapi() -> None:
    bad = []
    for path in _py_files(SERVICE) + _py_files(WORKER):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(FASTAPI_ALLOWED):
            continue
        bad += [_fmt(imp) for imp in parse_imports(path) if _top(imp.module) in FASTAPI_PACKAGES]
    assert not bad, (
        "only service/api/** may import fastapi/starlette:\n"
        + "\n".join(bad)
    )


def _sql_uses(path: Path) -> list[str]:
    """Names from SQL_BUILDERS imported from sqlalchemy, or used as attributes of an imported sqlalchemy module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(ROOT).as_posix()
    hits: list[str] = []
    sa_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module in SQL_MODULES:
            for alias in node.names:
                if alias.name in SQL_BUILDERS or alias.name == "*":
                    hits.append(f"{rel}:{node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in SQL_MODULES:
                    sa_aliases.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in SQL_BUILDERS:
            base = node.value
            dotted = []
            while isinstance(base, ast.Attribute):
                dotted.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in sa_aliases:
                hits.append(f"{rel}:{node.lineno}: {base.id}.{'.'.join(reversed(dotted + [node.attr]))}")
    return hits


def test_only_db_builds_sql() -> None:
    bad = []
    for path in _py_files(SERVICE) + _py_files(WORKER):
        if path.is_relative_to(SERVICE / "db"):
            continue
        bad += _sql_uses(path)
    assert not bad, "only service/db/** may build SQL (select/insert/update/delete/text):\n" + "\n".join(bad)


def test_client_imports_only_light_packages() -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for path in _py_files(SERVICE / "client"):
        for imp in parse_imports(path):
            top = _top(imp.module)
            if top == "service":
                if not any(imp.module == m or imp.module.startswith(m + ".") for m in CLIENT_SERVICE_ALLOWED):
                    bad.append(_fmt(imp))
            elif top not in CLIENT_ALLOWED and top not in stdlib and top != "__future__":
                bad.append(_fmt(imp))
    assert not bad, "service/client may import only stdlib/httpx/pydantic/service.client/service.domain:\n" + (
        "\n".join(bad)
    )


def test_client_import_loads_no_heavy_package() -> None:
    """What `import service.client` (and the client CLI) really loads, in a fresh interpreter."""
    code = (
        "import sys, service.client, service.client.cli, service.client.sdk\n"
        f"print(','.join(sorted(m for m in {CLIENT_FORBIDDEN_LOADED!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import service.client loaded: {out.stdout.strip()}"


def test_wire_schemas_import_only_pydantic() -> None:
    stdlib = set(sys.stdlib_module_names)
    bad = [
        _fmt(imp)
        for path in _py_files(SERVICE / "api" / "schemas")
        for imp in parse_imports(path)
        if not (
            _top(imp.module) in SCHEMAS_ALLOWED | stdlib | {"__future__"}
            or imp.module == "service.domain"
            or imp.module.startswith("service.api.schemas.")
        )
    ]
    assert not bad, "service/api/schemas/ (shared with the client) may import only pydantic:\n" + "\n".join(bad)


# 5. The other folders, each with its allow list (besides the standard library and the folder itself): a database
# layer that knows no web, engine or bytes; storage that knows no database or web; a serving runtime and reports that
# know the engine but neither the web nor the database. service/api/** may use them all (but never worker.*).
FOLDER_RULES: dict[str, tuple[set[str], set[str]]] = {  # folder -> (third-party packages, service modules)
    "db": ({"sqlalchemy"}, {"service.config", "service.domain", "service.errors"}),
    "storage": ({"boto3", "botocore"}, {"service.errors", "service.ml"}),
    "serving": ({"torch", "numpy"}, {"service.config", "service.ml"}),
    "reports": ({"matplotlib", "numpy"}, {"service.domain", "service.ml"}),
}


def _folder_violations(folder: str) -> list[str]:
    packages, modules = FOLDER_RULES[folder]
    own = f"service.{folder}"
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for path in _py_files(SERVICE / folder):
        for imp in parse_imports(path):
            top, m = _top(imp.module), imp.module
            if top == "service":
                if not any(m == ok or m.startswith(ok + ".") for ok in (own, *modules)):
                    bad.append(_fmt(imp))
            elif top not in stdlib and top not in packages:
                bad.append(_fmt(imp))
    return bad


@pytest.mark.parametrize("folder", sorted(FOLDER_RULES))
def test_folder_imports_only_what_its_rule_allows(folder: str) -> None:
    bad = _folder_violations(folder)
    packages, modules = FOLDER_RULES[folder]
    assert not bad, f"service/{folder} may import only {sorted(packages | modules)} (+ stdlib):\n" + "\n".join(bad)


def test_folder_rule_checker_flags_a_violation(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "SERVICE", tmp_path / "service")
    (tmp_path / "service" / "db").mkdir(parents=True)
    (tmp_path / "service" / "db" / "m.py").write_text(
        "import sqlalchemy\nfrom service.db import base\nfrom service.config import x\n"
        "def f():\n    from service.api import deps\n    import torch\n"
    )
    assert [line.split(": ", 1)[1] for line in _folder_violations("db")] == [
        "from service.api import deps", "import torch"]


def test_only_reports_import_matplotlib() -> None:
    bad = [
        _fmt(imp)
        for path in _py_files(SERVICE) + _py_files(WORKER)
        if not path.is_relative_to(SERVICE / "reports")
        for imp in parse_imports(path)
        if _top(imp.module) == "matplotlib"
    ]
    assert not bad, "only service/reports may import matplotlib:\n" + "\n".join(bad)


# ------------------------------------------------------------------------ the checker's own behaviour


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\nfrom . import spec\n", ["os", "service.ml", "service.ml.spec"]),
        ("from .spec import Spec\n", ["service.ml.spec"]),
        ("from ..config import get_settings\n", ["service.config"]),
        ("from ... import worker\n", [""]),  # escapes the project: unresolvable
    ],
)
def test_parse_imports_resolves_relative(
    tmp_path: Path, monkeypatch, source: str, expected: list[str]
) -> None:
    pkg = tmp_path / "service" / "ml"
    pkg.mkdir(parents=True)
    mod = pkg / "thing.py"
    mod.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [imp.module for imp in parse_imports(mod)] == expected


def test_sql_detector(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    mod = tmp_path / "m.py"
    mod.write_text(
        "import sqlalchemy as sa\nfrom sqlalchemy import select, func\nfrom sqlalchemy.orm import Session\n"
        "q = sa.update(1)\nr = sa.func.count()\n"
    )
    hits = _sql_uses(mod)
    assert len(hits) == 2 and "import select" in hits[0] and "sa.update" in hits[1]


# HEADWISE_WORKER_ID is not configuration: a worker's own id, handed by the Celery main process to its children.
ENV_NOT_SETTINGS = {"HEADWISE_WORKER_ID"}


def _env_reads(path: Path) -> list[str]:
    """HEADWISE_* names read with os.environ.get / os.getenv / os.environ[...] (string literals)."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        arg = None
        if isinstance(node, ast.Call) and node.args:
            func = ast.unparse(node.func)
            if func in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ") \
                and isinstance(node.ctx, ast.Load):
            arg = node.slice
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("HEADWISE_") \
                and arg.value not in ENV_NOT_SETTINGS:
            hits.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}: {arg.value}")
    return hits


def test_settings_are_read_only_by_config() -> None:
    bad = [hit for path in _py_files(SERVICE) + _py_files(WORKER)
           if path != SERVICE / "config.py" and not path.is_relative_to(SERVICE / "client")
           for hit in _env_reads(path)]
    assert not bad, "read settings through service.config.Settings, not os.environ:\n" + "\n".join(bad)


def test_env_read_detector(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    mod = tmp_path / "m.py"
    mod.write_text('import os\na = os.environ.get("HEADWISE_X")\nb = os.getenv("HOME")\nc = os.environ["HEADWISE_Y"]\n'
                   'os.environ["HEADWISE_Z"] = "1"\n')
    assert [h.split(": ")[1] for h in _env_reads(mod)] == ["HEADWISE_X", "HEADWISE_Y"]
