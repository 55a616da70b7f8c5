"""docs/architecture.md against the code: the layers contract it quotes is the one in
pyproject.toml, and its table of services is the container's wiring — every service the
container keeps is a row naming its class and module, and every service a constructor takes
is among that row's collaborators. On both engines (the revocation listener is PostgreSQL's)."""

from __future__ import annotations

import inspect
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from allotment.container import Container
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
