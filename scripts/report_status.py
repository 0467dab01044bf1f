"""Job adapter for `snakemake status`: files and bytes present and missing,
per target group and per instrument; also written as CSV when asked."""

import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: F821, SIM115
sys.path.insert(0, snakemake.params.package)  # noqa: F821

from mirage_reffiles.plan import status  # noqa: E402
from mirage_reffiles.table import load_table  # noqa: E402

params = snakemake.params  # noqa: F821
table = load_table(params.table)
report = status(params.mirage_data, table, {name: table.loc[ids] for name, ids in params.selections.items()})
shown = report.assign(
    GB_present=(report.bytes_present / 1e9).round(2), GB_missing=(report.bytes_missing / 1e9).round(2)
).drop(columns=["bytes_present", "bytes_missing"])
print(f"Status of {params.mirage_data}:\n{shown.to_string(index=False)}")
if params.csv:
    report.to_csv(params.csv, index=False)
    print(f"(written to {params.csv})")
