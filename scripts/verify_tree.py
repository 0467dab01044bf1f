"""Job adapter for `snakemake verify` and `snakemake repair`.

verify: report, per group, the files that match their records; fail if any
is damaged. repair (``params.clear_damaged``): also remove the damaged files and
their records (or record again a dark that matches the table) and list the rows
to fetch again in the output, with those that earlier, failed repairs left.
"""

import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821, SIM115
sys.path.insert(0, snakemake.params.package)  # noqa: F821

from pathlib import Path  # noqa: E402

from mirage_reffiles.table import load_table  # noqa: E402
from mirage_reffiles.verify import check_tree, clear_damaged, still_to_fetch, summarize  # noqa: E402

params = snakemake.params  # noqa: F821
mirage_data = Path(params.mirage_data)
table = load_table(params.table)
checks = check_tree(mirage_data, table, with_contents=params.with_contents)
selections = {name: table.loc[ids] for name, ids in params.selections.items()}
report = summarize(checks, selections).to_string()
damaged = checks[checks.status == "damaged"]
lines = [f"Checked {mirage_data} ({'sizes and contents' if params.with_contents else 'sizes'}):", report]
lines += [f"DAMAGED {check.file_id}: {check.detail}" for check in damaged.itertuples()]
if params.clear_damaged:
    repair = clear_damaged(mirage_data, table, checks, params.base_url)
    earlier = still_to_fetch(mirage_data, table, map(Path, params.unfinished))
    cleared = list(dict.fromkeys(repair.cleared + earlier))
    Path(snakemake.output[0]).write_text("".join(f"{file_id}\n" for file_id in cleared))  # noqa: F821
    for path in params.unfinished:
        Path(path).unlink(missing_ok=True)
    lines += repair.notes
    lines.append(
        f"{len(damaged)} damaged: {len(repair.recorded)} recorded again as they are, "
        f"{len(repair.cleared)} removed, to be fetched again"
    )
    if earlier:
        lines.append(f"{len(earlier)} removed by an earlier repair that did not finish, to be fetched now")
elif len(damaged):
    contents = " --config verify_contents=true" if params.with_contents else ""
    lines.append(f"{len(damaged)} damaged; run `snakemake --cores 8 repair{contents}` to repair them")
print("\n".join(lines), file=sys.stderr)
print("\n".join(lines))
sys.exit(1 if len(damaged) and not params.clear_damaged else 0)
