"""The printed table (and the Markdown one for docs/benchmarks.md)."""

from __future__ import annotations

import math
from typing import Any


def _num(v: float | None, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:,.{digits}f}"


def _ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v < 1:
        return f"{v * 1000:,.0f} µs"
    return f"{v:,.2f} ms" if v < 100 else f"{v:,.0f} ms"


def cell(kind: str, m: dict[str, Any] | None) -> str:
    if not m:
        return "–"
    if "error" in m and not any(k in m for k in ("rate", "p50_ms", "checks_per_s")):
        return "ERROR"
    mark = " (!)" if "error" in m else ""
    if kind == "rate":
        return f"{_num(m.get('rate'))} ev/s{mark}"
    if kind == "throughput":
        return f"{_num(m.get('checks_per_s'))} /s{mark}"
    return f"{_ms(m.get('p50_ms'))} / {_ms(m.get('p99_ms'))}{mark}"


def ratio(r: Any) -> str:
    if r is None:
        return "–"
    if isinstance(r, dict):
        return f"{r['p50']:.2f}× / {r['p99']:.2f}×"
    return f"{r:.2f}×"


HEAD = ("figure", "ours", "naive (raw SQL)", "floor", "vs naive", "vs floor")


def rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for backend, b in result["backends"].items():
        out.append((f"**{backend}** — {b.get('engine', '')}", "", "", "", "", ""))
        for f in b["figures"]:
            if f["kind"] == "scale":
                v = f.get("value")
                out.append((f["label"], "–" if v is None else f"{v:.2f}", "", "", "", ""))
                continue
            out.append(
                (
                    f["label"],
                    cell(f["kind"], f["ours"]),
                    cell(f["kind"], f["naive"]),
                    cell(f["kind"], f["floor"]),
                    ratio(f.get("vs_naive")),
                    ratio(f.get("vs_floor")),
                )
            )
        rss = b.get("server_max_rss_mib") or {}
        if rss:
            out.append(
                (
                    "server max RSS (MiB)",
                    ", ".join(f"{k}: {v:,.0f}" for k, v in rss.items()),
                    "",
                    "",
                    "",
                    "",
                )
            )
    return out


def text_table(result: dict[str, Any]) -> str:
    table = [HEAD, *rows(result)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEAD))]
    lines = []
    for n, r in enumerate(table):
        lines.append(
            "  ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
            ).rstrip()
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [
        "",
        "latency cells: p50 / p99 as the client sees them; ratios are speed ratios",
        "(ours ÷ reference for rates, reference ÷ ours for latencies): > 1 = faster.",
        "floor: bare Starlette endpoint (HTTP figures), raw executemany/COPY (ingest), one",
        "primary-key read (in process). naive: one SQL aggregate over raw JSON events per request.",
    ]
    return "\n".join(lines + notes)


def markdown_table(result: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" + "---:|" * (len(HEAD) - 1)]
    for r in rows(result):
        lines.append("| " + " | ".join(r) + " |")
    return "\n".join(lines)
