"""The reference-file table and the selections Mirage's keywords make of it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from mirage_reffiles.errors import TableError
from mirage_reffiles.sources import rows
from mirage_reffiles.tree.door import is_plain_name

INSTRUMENTS = ("nircam", "niriss", "fgs")
DARK_TYPES = {"linearized": ("linearized",), "raw": ("raw",), "both": ("raw", "linearized")}
#: Mirage's keywords that each drop the rows whose ``skip_flag`` names them.
SKIP_FLAGS = ("skip_darks", "skip_cosmic_rays", "skip_psfs", "skip_soss")
#: Columns a group may select on.
SELECTABLE = ("file_id", "instrument", "kind", "dark_type", "detector", "archive")


def load_table(path: str | Path, schema: Mapping | None = None) -> pd.DataFrame:
    """Read the table (every column as text) indexed by ``file_id``.

    With ``schema`` (the JSON Schema of one row), every row is checked and the
    first bad one is reported by its line number, column and allowed values.
    """
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if schema is not None:
        validate_rows(table, schema, source=str(path))
    duplicated = table.file_id[table.file_id.duplicated()]
    if len(duplicated):
        raise TableError(f"{path}: file_id {duplicated.iloc[0]!r} appears more than once")
    if len(bad := table.file_id[~table.file_id.map(is_plain_name)]):
        raise TableError(f"{path}: file_id {bad.iloc[0]!r} is not a plain name (letters, digits, '_', '.', '-';"
                         " not '.' or '..'): it names the row's record, lock and partial download")  # fmt: skip
    return table.set_index("file_id", drop=False)


def validate_rows(table: pd.DataFrame, schema: Mapping, source: str = "table") -> None:
    """Check each row against ``schema``; raise :class:`TableError` on the first bad one."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    missing = [name for name in schema.get("required", ()) if name not in table.columns]
    if missing:
        raise TableError(f"{source}: missing column(s) {', '.join(missing)}")
    properties = schema.get("properties", {})
    for number, row in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        error = jsonschema.exceptions.best_match(validator.iter_errors(row))
        if error is None:
            continue
        column = error.path[0] if error.path else "?"
        allowed = properties.get(column, {})
        if "enum" in allowed:
            hint = f"allowed: {', '.join(repr(v) for v in allowed['enum'])}"
        elif "pattern" in allowed:
            hint = f"expected to match {allowed['pattern']}"
        else:
            hint = error.message
        value = row.get(column, "")
        raise TableError(f"{source}, line {number}, column {column}: bad value {value!r}; {hint}")


def parse_instruments(value: str | Iterable[str]) -> list[str]:
    """Mirage's ``instrument`` keyword: 'all', one name, or a comma-separated list.

    >>> parse_instruments("NIRCam, fgs")
    ['nircam', 'fgs']
    """
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [name.strip().lower() for name in names if name.strip()]
    if names == ["all"]:
        return list(INSTRUMENTS)
    unknown = [name for name in names if name not in INSTRUMENTS]
    if unknown or not names:
        raise TableError(
            f"unknown instrument {', '.join(map(repr, unknown)) or repr(value)}; "
            f"choose 'all', one of {', '.join(INSTRUMENTS)}, or a comma-separated list of them"
        )
    return names


def parse_dark_type(value: str) -> list[str]:
    """Mirage's ``dark_type`` keyword: linearized, raw or both."""
    try:
        return list(DARK_TYPES[str(value).strip().lower()])
    except KeyError:
        raise TableError(f"unknown dark_type {value!r}; choose one of {', '.join(DARK_TYPES)}") from None


def mirage_group(instrument: str | Iterable[str], dark_type: str) -> dict[str, list[str]]:
    """The group that ``download_reffiles(dir, instrument=..., dark_type=...)`` fetches."""
    return {"instrument": parse_instruments(instrument), "dark_type": parse_dark_type(dark_type)}


def standard_groups() -> dict[str, dict[str, list[str]]]:
    """The built-in target groups, one per instrument and dark type: what
    ``download_reffiles(dir, instrument=I, dark_type=D)`` fetches.

    >>> standard_groups()["nircam_both"]
    {'instrument': ['nircam'], 'dark_type': ['raw', 'linearized']}
    """
    return {
        f"{instrument}_{dark_type}": mirage_group(instrument, dark_type)
        for instrument in INSTRUMENTS
        for dark_type in DARK_TYPES
    }


def vocabulary(schema: Mapping) -> dict[str, list[str]]:
    """The allowed values of each column that the row schema restricts to a list."""
    return {
        column: [value for value in spec["enum"] if value]
        for column, spec in schema.get("properties", {}).items()
        if "enum" in spec
    }


def select_group(
    table: pd.DataFrame,
    group: Mapping[str, Iterable[str]],
    name: str = "group",
    allowed: Mapping[str, list[str]] | None = None,
) -> pd.DataFrame:
    """Rows that match every column filter of ``group``.

    A row that leaves a column blank is not excluded by a filter on it: a
    ``dark_type`` filter picks which darks come, libraries come regardless.
    Unknown columns or values raise :class:`TableError` listing the valid
    ones: those in ``allowed`` for the column, else those in the table.
    """
    keep = pd.Series(True, index=table.index)
    for column, values in group.items():
        if column not in SELECTABLE:
            raise TableError(f"{name}: cannot select on {column!r}; choose from {', '.join(SELECTABLE)}")
        values = [str(v) for v in ([values] if isinstance(values, str) else values)]
        known = sorted((allowed or {}).get(column) or set(table[column]) - {""})
        unknown = [v for v in values if v not in known]
        if unknown:
            raise TableError(
                f"{name}: unknown {column} {', '.join(map(repr, unknown))}; valid values: {', '.join(known)}"
            )
        keep &= table[column].isin(values) | (table[column] == "")
    return table[keep]


def narrow(table: pd.DataFrame, options: Mapping[str, bool]) -> pd.DataFrame:
    """Apply Mirage's skip flags and ``single_dark`` to a selection."""
    drop = table.skip_flag.isin([flag for flag in SKIP_FLAGS if options.get(flag)])
    if options.get("single_dark"):
        drop |= (table.kind == "dark") & (table.single_dark != "true")
    return table[~drop]


def select(
    table: pd.DataFrame,
    group: Mapping,
    options: Mapping[str, bool],
    name: str = "group",
    allowed: Mapping[str, list[str]] | None = None,
) -> pd.DataFrame:
    """The rows a target builds: its group, narrowed by the skip flags and single_dark."""
    return narrow(select_group(table, group, name, allowed), options)


def as_rows(table: pd.DataFrame, root: str | Path, base_urls: Iterable[str]) -> pd.DataFrame:
    """The table's rows in the one shape of every source (see :mod:`.rows`): into ``root``
    (MIRAGE_DATA), from each of ``base_urls`` in order, each tarball limited to its kind's folder."""
    from mirage_reffiles.tree.layout import TARBALL_FOLDERS

    base_urls = list(base_urls)
    lanes = [
        TARBALL_FOLDERS[kind].format(instrument=instrument) if archive == "tar.gz" else destination
        for kind, instrument, archive, destination in zip(
            table.kind, table.instrument, table.archive, table.destination, strict=True
        )
    ]
    return rows.frame(
        table.assign(
            source="mirage",
            root=str(root),
            urls=[" ".join(url + path for url in base_urls) for path in table.path],
            lane=lanes,
        )
    )
