"""Job adapter for `snakemake verify` and `snakemake repair`.

verify: report, per group, the files that match their records; fail if any
is damaged. repair (``params.clear_damaged``): also remove the damaged files and
their records and list them in the output, so the build fetches them again.
"""

import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821, SIM115
sys.path.insert(0, snakemake.params.package)  # noqa: F821

from pathlib import Path  # noqa: E402

from mirage_reffiles.table import load_table  # noqa: E402
from mirage_reffiles.verify import check_tree, clear_damaged, summarize  # noqa: E402

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
    cleared = clear_damaged(mirage_data, checks)
    Path(snakemake.output[0]).write_text("".join(f"{file_id}\n" for file_id in cleared))  # noqa: F821
    lines.append(f"{len(cleared)} damaged; removed, to be fetched again")
elif len(damaged):
    lines.append(f"{len(damaged)} damaged; run `snakemake repair` to fetch them again")
print("\n".join(lines), file=sys.stderr)
print("\n".join(lines))
sys.exit(1 if len(damaged) and not params.clear_damaged else 0)
