"""The table and bench/results.json: every figure beside the peer it was measured against, their ratio, and the
target on that ratio, if the issue sets one. Pure functions of the measurements' rows."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

_TARGET = re.compile(r"^(>=|<=|<|>)\s*([0-9.]+)\s*(x|%)?$")


@dataclass(frozen=True)
class Row:
    """One figure of a measurement. `ratio` = value / peer_value, read against `target` (">= 5x", "< 5%")."""

    figure: str  # the key within its measurement, e.g. "hf_tokens_per_s"
    value: float | None
    unit: str
    peer: str = ""  # what the value is compared with, e.g. "per-prompt loop"
    peer_value: float | None = None
    ratio_unit: str = "x"  # "x" (5.2x) or "%" (a fraction of the peer: 45%)
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.peer_value:
            return None
        return self.value / self.peer_value


def verdict(ratio: float | None, target: str) -> str:
    """'pass' or 'FAIL' for a ratio against a target such as ">= 5x", ">= 60%", "< 5%", "<= 1x"; '' without a target."""
    if not target or ratio is None:
        return ""
    match = _TARGET.match(target.strip())
    if match is None:
        raise ValueError(f"target {target!r} is not of the form '>= 5x', '< 5%', ...")
    op, number, unit = match.groups()
    threshold = float(number) / (100.0 if unit == "%" else 1.0)
    ok = {">=": ratio >= threshold, "<=": ratio <= threshold, "<": ratio < threshold, ">": ratio > threshold}[op]
    return "pass" if ok else "FAIL"


def format_number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.1f}%"
    size = abs(value)
    digits = 0 if size >= 100 else 1 if size >= 10 else 2
    text = f"{value:,.{digits}f}" if size >= 0.1 or size == 0 else f"{value:.2g}"
    return f"{text}{unit}" if unit == "x" else f"{text} {unit}".rstrip()


def row_record(measurement: str, row: Row) -> dict:
    """A row as results.json holds it, with its ratio and verdict worked out."""
    return {"measurement": measurement, **asdict(row), "ratio": row.ratio, "verdict": verdict(row.ratio, row.target)}


def flat_keys(measurements: dict[str, dict]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """figures and ratios of results.json: "measurement.figure" -> value, and -> ratio for rows with a peer."""
    figures, ratios = {}, {}
    for name, result in measurements.items():
        for record in result["rows"]:
            key = f"{name}.{record['figure']}"
            figures[key] = record["value"]
            if record["peer"]:
                ratios[key] = record["ratio"]
    return figures, ratios


def format_table(measurements: dict[str, dict]) -> str:
    """One plain-text table over every measurement's rows; a failed measurement shows its error instead."""
    header = ("measurement", "figure", "value", "peer", "ratio", "target")
    lines: list[tuple[str, ...]] = []
    notes: list[str] = []
    for name, result in measurements.items():
        if result.get("error"):
            lines.append((name, "error", result["error"][:100], "", "", ""))
        for r in result["rows"]:
            if result.get("error") and r["value"] is None:
                continue
            peer = f"{r['peer']} {format_number(r['peer_value'], r['unit'])}" if r["peer"] else ""
            ratio = format_number(r["ratio"], r["ratio_unit"]) if r["peer"] else ""
            target = f"{r['target']} {r['verdict']}".strip() if r["target"] else ""
            lines.append((name, r["figure"], format_number(r["value"], r["unit"]), peer, ratio, target))
            if r["note"]:
                notes.append(f"{name}.{r['figure']}: {r['note']}")
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *lines]]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text + ([""] + notes if notes else []))
