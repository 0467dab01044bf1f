"""Shared fixtures: the table, a synthetic mirror, a real HTTP server on
127.0.0.1 serving it, and a runner for the real `snakemake` command line."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.testing.mirror import build_mirror
from mirage_reffiles.testing.server import serve

REPO = Path(__file__).resolve().parents[1]
TABLE_CSV = REPO / "config" / "reference_files.csv"


@pytest.fixture(scope="session")
def table():
    with open(REPO / "config/schemas/reference_files.schema.yaml") as handle:
        return load_table(TABLE_CSV, schema=yaml.safe_load(handle))


@pytest.fixture(scope="session")
def config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.fixture(scope="session")
def mirror(tmp_path_factory, table):
    """(root folder, {file_id: {path under MIRAGE_DATA: bytes}}, its pinned table's CSV) for every row."""
    root = tmp_path_factory.mktemp("mirror")
    pinned, expected = build_mirror(root, table)
    pinned.to_csv(root / "pinned_table.csv", index=False)
    return root, expected, root / "pinned_table.csv"


#: Bytes per second per connection for slow_mirror: each of its darks takes several seconds.
SLOW = 400_000


@pytest.fixture(scope="session")
def slow_mirror(tmp_path_factory, table):
    """FGS's rows with darks of 3 MB (two with single_dark, and two tarballs): (root, expected, pinned CSV, pinned)."""
    root = tmp_path_factory.mktemp("slow_mirror")
    pinned, expected = build_mirror(root, table[table.instrument == "fgs"], size=3_000_000)
    pinned.to_csv(root / "pinned.csv", index=False)
    return root, expected, root / "pinned.csv", pinned


def fgs_raw_single(pinned):
    """The rows of target fgs_raw with single_dark=true: two raw darks and the libraries."""
    return pinned[(pinned.kind != "dark") | ((pinned.single_dark == "true") & (pinned.dark_type == "raw"))]


@pytest.fixture
def server(mirror):
    with serve(mirror[0]) as running:
        yield running


@pytest.fixture
def mirage_data(tmp_path):
    """MIRAGE_DATA for a job run without Snakemake (it need not exist yet)."""
    return tmp_path / "mirage_data"


@contextmanager
def serving(root: Path, files: Mapping[str, bytes]) -> Iterator:
    """``files`` (path on the server: bytes) written under ``root`` and served on 127.0.0.1."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    with serve(root) as server:
        yield server


def dark_request(mirage_data: Path, urls: list[str], path: str, gz: bytes, **options):
    """The request of one dark whose ``.gz`` (``gz``) every server of ``urls`` serves at ``path``:
    the first is its source, the others its mirrors; ``options`` are more fields of the request."""
    from mirage_reffiles.transfer.fetch import FetchRequest
    from mirage_reffiles.transfer.http import Expected

    return FetchRequest(
        url=urls[0] + path,
        mirrors=tuple(url + path for url in urls[1:]),
        mirage_data=mirage_data,
        file_id="dark",
        archive="gz",
        destination=path.removesuffix(".gz"),
        expected=Expected(size=len(gz), sha256=hashlib.sha256(gz).hexdigest()),
        **options,
    )


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("MIRAGE_DATA", raising=False)
    return tmp_path


class Snakemake:
    """Runs the workflow's real command line in a scratch working directory."""

    def __init__(self, workdir: Path, base_url: str, table: Path | None = None):
        self.workdir = workdir
        self.mirage_data = workdir / "mirage_data"
        self.base_url = base_url
        self.table = table

    def __call__(self, *args: str, config: dict | None = None, check: bool = True, timeout: float = 300):
        settings = {"base_url": self.base_url, "mirage_data": str(self.mirage_data)}
        if self.table:
            settings["reference_table"] = str(self.table)
        settings.update(config or {})
        command = [
            sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "4", *args,
            "--config", *(f"{key}={value}" for key, value in settings.items()),
        ]  # fmt: skip
        result = subprocess.run(command, cwd=self.workdir, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result


@pytest.fixture
def snakemake(workdir, server, mirror):
    """The CLI against the local server, with the table pinned to the mirror's files."""
    return Snakemake(workdir, server.url, mirror[2])


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (outside the bookkeeping folder) with its bytes."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".reffiles" not in path.relative_to(root).parts
    }


def expected_tree(mirror_files: dict, rows) -> dict[str, bytes]:
    files = {}
    for row in rows.itertuples():
        files.update(mirror_files[row.file_id])
    return files
