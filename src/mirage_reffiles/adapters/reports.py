"""What ``snakemake status``, ``verify`` and ``repair`` do: each rule is one call here.

Each report is printed and written to the job's log (in the working
directory: the tree may be a read-only shared install).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mirage_reffiles.errors import DamageFound
from mirage_reffiles.sources.mirage import combine_rows, load_table
from mirage_reffiles.tree.plan import status
from mirage_reffiles.tree.verify import check_tree, clear_damaged, still_to_fetch, summarize


def _rows(table: str, extra_rows: list[dict]):
    """The table's rows and those that target groups build beside them (grism folders)."""
    rows = load_table(table)
    if not extra_rows:
        return rows
    return combine_rows(rows, pd.DataFrame(list(extra_rows), dtype=str).set_index("file_id", drop=False))


def _selections(table, selections: dict[str, list[str]]):
    return {name: table.loc[ids] for name, ids in selections.items()}


def _show(text: str, log: str | Path) -> None:
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text(text + "\n")
    print(text, flush=True)


def show_status(mirage_data: str, table: str, selections: dict, csv: str, log: str, extra_rows=()) -> None:
    """Files and bytes present and missing, per target group and per instrument (and as CSV when asked)."""
    rows = _rows(table, extra_rows)
    report = status(mirage_data, rows, _selections(rows, selections))
    shown = report.assign(
        GB_present=(report.bytes_present / 1e9).round(2), GB_missing=(report.bytes_missing / 1e9).round(2)
    ).drop(columns=["bytes_present", "bytes_missing"])
    text = f"Status of {mirage_data}:\n{shown.to_string(index=False)}"
    if csv:
        report.to_csv(csv, index=False)
        text += f"\n(written to {csv})"
    _show(text, log)


def _check(mirage_data: Path, rows, selections: dict, with_contents: bool):
    checks = check_tree(mirage_data, rows, with_contents=with_contents)
    damaged = checks[checks.status == "damaged"]
    lines = [
        f"Checked {mirage_data} ({'sizes and contents' if with_contents else 'sizes'}):",
        summarize(checks, _selections(rows, selections)).to_string(),
        *(f"DAMAGED {check.file_id}: {check.detail}" for check in damaged.itertuples()),
    ]
    return checks, damaged, lines


def verify_tree(mirage_data: str, table: str, selections: dict, with_contents: bool, log: str, extra_rows=()) -> None:
    """Check the tree against its records; :class:`DamageFound` names the repair if anything is damaged."""
    rows = _rows(table, extra_rows)
    _, damaged, lines = _check(Path(mirage_data), rows, selections, with_contents)
    contents = " --config verify_contents=true" if with_contents else ""
    hint = f"{len(damaged)} damaged; run `snakemake --cores 8 repair{contents}` to repair them"
    _show("\n".join(lines + ([hint] if len(damaged) else [])), log)
    if len(damaged):
        raise DamageFound(hint)


def clear_for_repair(
    mirage_data: str,
    table: str,
    selections: dict,
    with_contents: bool,
    base_url: str,
    unfinished: list[str],
    output: str,
    log: str,
    extra_rows=(),
) -> None:
    """Check the tree; record again what matches the table, remove the rest and list it in
    ``output`` (with what ``unfinished`` repairs left) for the build to fetch again."""
    rows = _rows(table, extra_rows)
    checks, damaged, lines = _check(Path(mirage_data), rows, selections, with_contents)
    repair = clear_damaged(Path(mirage_data), rows, checks, base_url)
    earlier = still_to_fetch(Path(mirage_data), rows, map(Path, unfinished))
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
