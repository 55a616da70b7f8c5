"""docs/architecture.md against the code: the layers contract it quotes is the one in
pyproject.toml, and its table of services is the container's wiring — every service the
container keeps is a row naming its class and module, and every service a constructor takes
is among that row's collaborators. On both engines (the revocation listener is PostgreSQL's).

Also: its table of contracts is pyproject.toml's (each one what the row says, every top-level
module in the layers), the gate runs them before the tests, no service imports the container,
the settings or HTTP, every file and attribute it names exists, each row's storage cell is
what the service imports, its example builds a service from its collaborators alone, ingest
has one decode path (flow 1), and only clock.py may read the wall clock.
(tests/test_import_contracts.py proves the contracts catch a back-arrow.)"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grimp

from allotment.clock import FrozenClock
from allotment.container import Container
from allotment.domain.entitlement_inputs import FeatureCreate
from allotment.services.features import FeatureService
from allotment.services.meters import MeterService
from allotment.storage import migrate
from allotment.storage.database import open_database
from tests.support import frozen_container

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()
NOT_SERVICES = {"settings", "db", "clock"}


def _service_rows() -> dict[str, tuple[str, str, str]]:
    """``container.`` name → (class, module path, collaborators cell), from the doc's table."""
    table = DOC.split("## Services and their collaborators", 1)[1].split("\n\n")[2]
    rows = {}
    for line in table.splitlines()[2:]:
        name_cell, class_cell, collaborators, _ = (c.strip() for c in line.strip("|").split(" | "))
        ticked = re.findall(r"`([^`]+)`", class_cell)
        name = re.findall(r"`([^`]+)`", name_cell)[0]
        if name_cell.startswith("(inside"):
            name = ticked[0]  # a service the container does not keep itself
        rows[name] = (ticked[0], ticked[1], collaborators)
    return rows


def test_the_layers_the_doc_quotes_are_the_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    [layers] = [c for c in contracts if c["type"] == "layers" and c["containers"] == ["allotment"]]
    quoted = " → ".join(layer.replace("|", "\\|") for layer in layers["layers"])
    assert f"| layers | `{quoted}`" in DOC


def test_the_service_table_is_the_containers_wiring(db_url: str) -> None:
    rows = _service_rows()
    with frozen_container(db_url, datetime(2025, 1, 1, tzinfo=UTC)) as c:
        kept = {k: v for k, v in vars(c).items() if not k.startswith("_") and k not in NOT_SERVICES}
        assert set(kept) <= set(rows), (
            f"services the doc's table does not list: {set(kept) - set(rows)}"
        )
        documented = {n for n in rows if n[0].islower()}
        assert documented == set(kept), (
            f"rows the container does not keep: {documented - set(kept)}"
        )
        cache = c.entitlements.cache
        found = {**kept, "ValueCache": cache}
        for name, service in found.items():
            if service is None:  # PostgreSQL's listener on SQLite; the evaluator before serve
                continue
            cls, module, _ = rows[name]
            assert type(service).__name__ == cls, (name, type(service).__name__, cls)
            path = type(service).__module__.removeprefix("allotment.").replace(".", "/") + ".py"
            assert path == module, (name, path, module)
    classes = {cls: name for name, (cls, _, _) in rows.items()}
    for name, (cls, module, collaborators) in rows.items():
        mod = __import__("allotment." + module[:-3].replace("/", "."), fromlist=[cls])
        params = inspect.signature(getattr(mod, cls).__init__).parameters.values()
        for p in params:
            for other, other_name in classes.items():
                if other != cls and re.search(rf"\b{other}\b", str(p.annotation)):
                    assert f"`{other_name}`" in collaborators, (
                        f"{cls} takes {p.name}: {other}, the doc's row for `{name}` "
                        f"does not name `{other_name}` among its collaborators"
                    )


def test_the_container_builds_in_the_documented_order() -> None:
    order = [n for n in _service_rows() if n[0].islower()]
    source = inspect.getsource(Container)
    assigned = [m for m in re.findall(r"self\.(\w+)(?:: [^=]+)? = ", source) if m in order]
    assert [n for n in order if n in assigned] == list(dict.fromkeys(assigned)), (
        "the doc's rows are not in the order container.py builds them"
    )


# ---------------------------------------------------------------- the contracts' table

SRC = ROOT / "src" / "allotment"
ENTRY_POINT = "__main__"  # `python -m allotment`: above every layer, imports only the CLI


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _contract_rows() -> dict[str, str]:
    """The doc's table of contracts: first cell → second cell."""
    table = DOC.split("| contract | what it holds |", 1)[1].split("\n\n")[0]
    rows = {}
    for line in table.strip().splitlines()[1:]:
        name, holds = line.strip().strip("|").split(" | ", 1)
        rows[name.strip()] = holds
    return rows


def _top_level() -> set[str]:
    """Our top-level modules and packages (``allotment.x``), the entry point aside."""
    names = {p.stem for p in SRC.glob("*.py")} | {p.parent.name for p in SRC.glob("*/__init__.py")}
    return names - {"__init__", ENTRY_POINT}


def test_the_doc_lists_every_contract_and_each_is_what_it_says() -> None:
    by_name = {c["name"]: c for c in _contracts()}
    rows = _contract_rows()
    assert len(rows) == len(by_name), (sorted(rows), sorted(by_name))
    [layers] = [c for c in by_name.values() if c["type"] == "layers" and c["containers"] == [
        "allotment"]]  # fmt: skip
    layered = {m.strip() for layer in layers["layers"] for m in layer.split("|")}
    assert layered == _top_level(), "the layers contract does not name every top-level module"
    [domain] = [c for c in by_name.values() if c.get("source_modules") == ["allotment.domain"]]
    others = {"allotment." + m for m in _top_level() - {"domain"}}
    assert set(domain["forbidden_modules"]) == others
    quoted = set(re.findall(r"`([a-z_]+)`", rows["the domain imports nothing of ours but itself"]))
    assert {m.removeprefix("allotment.") for m in domain["forbidden_modules"]} == quoted
    [storage] = [c for c in by_name.values() if c.get("source_modules") == ["allotment.storage"]]
    assert storage["forbidden_modules"] == ["allotment.clock"]
    assert "storage never reads the clock" in rows
    [http] = [c for c in by_name.values() if c.get("containers") == ["allotment.http"]]
    quoted_http = " → ".join(f"http.{layer}" for layer in http["layers"])
    assert f"`{quoted_http}`" in rows["http: app over routes"]
    [acyclic] = [c for c in by_name.values() if c["type"] == "acyclic_siblings"]
    assert acyclic["ancestors"] == ["allotment"]
    assert "no circle between sibling modules, at any depth" in rows


def test_the_gate_runs_the_contracts_before_the_tests() -> None:
    """scripts/test (which .ci/run executes) stops at a broken contract: ``set -e``, and
    ``lint-imports`` before pytest."""
    assert "exec ./scripts/test" in (ROOT / ".ci" / "run").read_text()
    script = (ROOT / "scripts" / "test").read_text()
    assert "set -euo pipefail" in script
    lines = [line.strip() for line in script.splitlines()]
    lint = lines.index(".venv/bin/lint-imports")
    first_pytest = next(
        i for i, line in enumerate(lines) if line.startswith(".venv/bin/python -m pytest")
    )
    assert lint < first_pytest


def test_no_service_imports_the_container_the_settings_or_http() -> None:
    graph = grimp.build_graph("allotment")
    services = {m for m in graph.modules if m.startswith("allotment.services.")}
    assert len(services) > 10
    for module in sorted(services):
        imported = graph.find_modules_directly_imported_by(module)
        wrong = {
            m
            for m in imported
            if m in ("allotment.container", "allotment.config", "allotment.cli")
            or m.startswith("allotment.http")
        }
        assert not wrong, f"{module} imports {sorted(wrong)}"


# ---------------------------------------------------------------- names the doc uses

PLACEHOLDERS = {"domain/x.py", "storage/x_repo.py", "services/x.py", "http/routes/v1_x.py"}


def test_every_file_the_doc_names_exists() -> None:
    named = set(re.findall(r"`([\w./]+\.py)`", DOC)) - PLACEHOLDERS
    assert len(named) > 30
    missing = [n for n in sorted(named) if not (SRC / n).is_file() and not (ROOT / n).is_file()]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"
    for other in ("scripts/test", "pyproject.toml"):
        assert f"`{other}`" in DOC
        assert (ROOT / other).is_file()
    assert "`python -m bench.ingest_door`" in DOC
    assert (ROOT / "bench" / "ingest_door.py").is_file()


def test_every_attribute_the_doc_names_exists(db_url: str) -> None:
    """``Class.attr`` (a class of ``services/``), ``module.attr`` (a module of ours, by its
    name in ``storage/`` or its path), ``service.attr`` (a service the container keeps)."""
    rows = _service_rows()
    service_classes = {
        name: obj
        for path in sorted((SRC / "services").glob("*.py"))
        for name, obj in vars(importlib.import_module(_dotted(f"services/{path.name}"))).items()
        if inspect.isclass(obj) and obj.__module__.startswith("allotment.services.")
    }
    dotted = {(o, a) for o, a in re.findall(r"`([\w/]+)\.(\w+)`", DOC) if a != "py"}
    not_ours = {("datetime", "now"), ("pyproject", "toml")}
    checked = 0
    with frozen_container(db_url, datetime(2025, 1, 1, tzinfo=UTC)) as c:
        for owner, attr in sorted(dotted - not_ours):
            target: object
            if owner == "allotment":
                target = importlib.import_module("allotment")
                importlib.import_module(f"allotment.{attr}")
            elif owner[0].isupper():
                assert owner in service_classes, f"`{owner}.{attr}`: no such class in services/"
                target = service_classes[owner]
            elif owner == "container":
                target = c
            elif owner in rows:
                target = getattr(c, owner)
            elif (SRC / "storage" / f"{owner}.py").is_file():
                target = importlib.import_module(f"allotment.storage.{owner}")
            else:
                assert (SRC / f"{owner}.py").is_file(), f"`{owner}.{attr}`: no module {owner}"
                target = importlib.import_module(_dotted(f"{owner}.py"))
            assert hasattr(target, attr), f"`{owner}.{attr}`: {target!r} has no {attr}"
            checked += 1
    assert checked >= 15
    events_route = importlib.import_module("allotment.http.routes.events")
    for name in ("decode_events", "commit", "ingest", "ingest_fast_path"):
        assert callable(getattr(events_route, name))  # the ingest flow's one code path


def _dotted(module_path: str) -> str:
    return "allotment." + module_path[:-3].replace("/", ".")


def test_the_storage_column_is_what_each_service_imports() -> None:
    """Every storage module a row's modules import is in its storage cell, and every module
    the cell names is imported by them or by what they import (the cell says "through")."""
    graph = grimp.build_graph("allotment")
    table = DOC.split("## Services and their collaborators", 1)[1].split("\n\n")[2]
    seam = {"database", "seam"}
    storage = {p.stem for p in (SRC / "storage").glob("*.py")} - {"__init__"}
    for line in table.splitlines()[2:]:
        name, class_cell, collaborators, cell = (c.strip() for c in line.strip("|").split(" | "))
        modules = [
            _dotted(m)
            for m in re.findall(r"`((?:services|storage)/\w+\.py)`", class_cell + collaborators)
        ]
        if modules[0].startswith("allotment.storage."):
            continue  # a storage class kept by the container (the revocation listener)
        direct = {
            i.removeprefix("allotment.storage.")
            for m in modules
            for i in graph.find_modules_directly_imported_by(m)
            if i.startswith("allotment.storage.")
        } - seam
        named = {n for n in re.findall(r"`(\w+)`", cell) if n in storage}
        assert direct <= named, f"{name}: imports {sorted(direct - named)}, not in its cell"
        reach = direct | {
            i.rsplit(".", 1)[-1]
            for m in modules
            for d in graph.find_modules_directly_imported_by(m)
            for i in graph.find_modules_directly_imported_by(d)
            if i.startswith("allotment.storage.")
        }
        assert named <= reach, f"{name}: its cell names {sorted(named - reach)}, not imported"


def test_a_service_builds_from_its_collaborators_alone(db_url: str) -> None:
    """The doc's example, run: no container, no settings."""
    assert "`FeatureService(db, clock, MeterService(db, clock))`" in DOC
    db = open_database(db_url)
    try:
        migrate.migrate(db, 0)
        clock = FrozenClock(datetime(2025, 1, 1, tzinfo=UTC))
        features = FeatureService(db, clock, MeterService(db, clock))
        made = features.create(FeatureCreate("doc-example", "Doc example", None, None, None))
        assert features.get("doc-example") == made
    finally:
        db.close()


# ---------------------------------------------------------------- data flow 1: one ingest door


def _calls(node: ast.AST) -> set[str]:
    """Names called inside ``node``: ``f(…)`` → f, ``x.f(…)`` → f."""
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            out.add(n.func.id)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            out.add(n.func.attr)
    return out


def _functions(module_path: str) -> dict[str, ast.AST]:
    tree = ast.parse((SRC / module_path).read_text())
    return {
        n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_ingest_has_one_decode_and_validate_path() -> None:
    """The doc's flow 1: both HTTP entrances decode with ``decode_events`` and join the group
    commit with ``commit``; ``allotment events import`` uses ``decode_events``,
    ``EventService.prefold`` and ``submit``; and nothing outside the events route (and the
    domain that defines them) builds or validates CloudEvents."""
    route = _functions("http/routes/events.py")
    for entrance in ("ingest", "ingest_fast_path"):
        assert {"decode_events", "commit"} <= _calls(route[entrance]), entrance
    assert {"decode_events", "submit", "prefold"} <= _calls(ast.parse(
        (SRC / "event_import.py").read_text()))  # fmt: skip
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        if name in ("http/routes/events.py", "domain/events.py"):
            continue
        used = _calls(ast.parse(path.read_text())) & {"build_event", "validate_batch"}
        assert not used, f"{name} decodes events itself ({sorted(used)}): use decode_events"


def test_only_the_clock_module_may_read_the_wall_clock() -> None:
    """The doc's "Time is injected": ruff bans ``datetime.now`` (and ``utcnow``, ``time.time``)
    in ``src`` everywhere but ``clock.py``."""
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "TID" in ruff["select"]
    banned = ruff["flake8-tidy-imports"]["banned-api"]
    assert {"datetime.datetime.now", "datetime.datetime.utcnow", "time.time"} <= set(banned)
    exempt = [f for f, rules in ruff["per-file-ignores"].items() if "TID251" in rules]
    assert [f for f in exempt if f.startswith("src/")] == ["src/allotment/clock.py"]
    assert "`clock.py` is the only module allowed to read the wall clock" in " ".join(DOC.split())
