"""Round metrics as a spreadsheet: one row per round, the round's fields, then one column per metric."""
import csv
import io
from typing import Any

ROUND_COLUMNS = ("number", "status", "base_version", "model_version", "opened_at", "closed_at", "duration_s",
                 "updates", "failure_reason")
# A spreadsheet runs a cell that starts with one of these as a formula; metric names come from nodes.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def rounds_csv(rounds: list[dict[str, Any]]) -> str:
    """CSV of `rounds` (as selectors.rounds_history gives them); metric columns sorted by name, empty when absent."""
    names = sorted({name for r in rounds if isinstance(r.get("metrics"), dict) for name in r["metrics"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*ROUND_COLUMNS, *(_cell(name) for name in names)])
    for r in rounds:
        metrics = r["metrics"] if isinstance(r.get("metrics"), dict) else {}
        writer.writerow([*(_cell(r.get(c)) for c in ROUND_COLUMNS), *(_cell(metrics.get(n)) for n in names)])
    return out.getvalue()
