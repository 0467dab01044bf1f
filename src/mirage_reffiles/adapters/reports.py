"""What ``snakemake status``, ``verify`` and ``repair`` do: each rule is one call here.

Each report is printed and written to the job's log (in the working
directory: the tree may be a read-only shared install).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mirage_reffiles.errors import DamageFound
from mirage_reffiles.sources.rows import frame
from mirage_reffiles.tree.plan import status
from mirage_reffiles.tree.verify import check_tree, clear_damaged, still_to_fetch, summarize


def _selections(rows: pd.DataFrame, selections: dict[str, list[str]]):
    return {name: rows.loc[ids] for name, ids in selections.items()}


def _trees(rows: pd.DataFrame) -> str:
    return ", ".join(dict.fromkeys(rows.root))


def _show(text: str, log: str | Path) -> None:
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text(text + "\n")
    print(text, flush=True)


def show_status(rows: list[dict], selections: dict, csv: str, log: str, notes: list[str] = ()) -> None:
    """Files and bytes present and missing, per target group, source and instrument (and as CSV when asked)."""
    rows = frame(rows)
    report = status(rows, _selections(rows, selections))
    shown = report.assign(
        GB_present=(report.bytes_present / 1e9).round(2), GB_missing=(report.bytes_missing / 1e9).round(2)
    ).drop(columns=["bytes_present", "bytes_missing"])
    text = "\n".join([f"Status of {_trees(rows)}:", shown.to_string(index=False), *notes])
    if csv:
        report.to_csv(csv, index=False)
        text += f"\n(written to {csv})"
    _show(text, log)


def _check(rows, selections: dict, with_contents: bool):
    checks = check_tree(rows, with_contents=with_contents)
    damaged = checks[checks.status == "damaged"]
    lines = [
        f"Checked {_trees(rows)} ({'sizes and contents' if with_contents else 'sizes'}):",
        summarize(checks, _selections(rows, selections)).to_string(),
        *(f"DAMAGED {check.file_id}: {check.detail}" for check in damaged.itertuples()),
    ]
    return checks, damaged, lines


def verify_tree(rows: list[dict], selections: dict, with_contents: bool, log: str) -> None:
    """Check the trees against their records; :class:`DamageFound` names the repair if anything is damaged."""
    rows = frame(rows)
    _, damaged, lines = _check(rows, selections, with_contents)
    contents = " --config verify_contents=true" if with_contents else ""
    hint = f"{len(damaged)} damaged; run `snakemake --cores 8 repair{contents}` to repair them"
    _show("\n".join(lines + ([hint] if len(damaged) else [])), log)
    if len(damaged):
        raise DamageFound(hint)


def clear_for_repair(
    rows: list[dict], selections: dict, with_contents: bool, unfinished: list[str], output: str, log: str
) -> None:
    """Check the trees; record again what matches the table, remove the rest and list it in
    ``output`` (with what ``unfinished`` repairs left) for the build to fetch again."""
    rows = frame(rows)
    checks, damaged, lines = _check(rows, selections, with_contents)
    repair = clear_damaged(rows, checks)
    earlier = still_to_fetch(rows, map(Path, unfinished))
    cleared = list(dict.fromkeys(repair.cleared + earlier))
    Path(output).write_text("".join(f"{file_id}\n" for file_id in cleared))
    for path in unfinished:
        Path(path).unlink(missing_ok=True)
    lines += repair.notes
    lines.append(
        f"{len(damaged)} damaged: {len(repair.recorded)} recorded again as they are, "
        f"{len(repair.cleared)} removed, to be fetched again"
    )
    if earlier:
        lines.append(f"{len(earlier)} removed by an earlier repair that did not finish, to be fetched now")
    _show("\n".join(lines), log)


def finish_repair(cleared: str, log: str) -> None:
    """Everything on the list is fetched again: the repair is done."""
    file_ids = Path(cleared).read_text().split()
    Path(log).write_text(f"fetched again: {' '.join(file_ids) or 'nothing'}\n")
    Path(cleared).unlink()
