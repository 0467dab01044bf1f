"""A file under its final name is on disk, not only in the page cache: seen in the system calls of a
real fetch (strace), since a power cut cannot be staged in a test."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from test_faults import DEST, LIBRARY, site  # noqa: F401 (the fixture)

from conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

FETCH = """
import sys
from pathlib import Path
from mirage_reffiles.transfer.fetch import fetch_gzip, fetch_tarball
url, mirage_data = sys.argv[1], Path(sys.argv[2])
fetch_gzip(url + "d/dark.fits.gz", mirage_data, "dark", sys.argv[3])
fetch_tarball(url + "d/lib.tar.gz", mirage_data, "lib")
"""


def system_calls(site, tmp_path) -> list[str]:  # noqa: F811 (the fixture)
    trace = tmp_path / "trace"
    command = ["strace", "-f", "-y", "-o", str(trace), "-e", "trace=fsync,rename,renameat,renameat2",
               sys.executable, "-c", FETCH, site.url, str(tmp_path / "mirage_data"), DEST]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 0, done.stderr[-3000:]
    return trace.read_text().splitlines()


def test_every_final_name_is_given_to_bytes_already_on_disk(site, tmp_path):  # noqa: F811 (the fixture)
    calls = system_calls(site, tmp_path)
    finals = [str(tmp_path / "mirage_data" / DEST)]
    finals += [str(tmp_path / "mirage_data" / name.removeprefix("mirage_data/")) for name in LIBRARY]
    for final in finals:
        renamed = next(n for n, call in enumerate(calls) if re.search(rf'rename\w*\(.*"{re.escape(final)}"', call))
        staged = re.search(r'rename\w*\([^"]*"([^"]+)"', calls[renamed]).group(1)
        synced = [n for n, call in enumerate(calls) if re.search(rf"fsync\(\d+<{re.escape(staged)}>\)", call)]
        assert synced and synced[0] < renamed, f"{staged} was not synced before it became {final}"
        folder = final.rsplit("/", 1)[0]
        assert any(re.search(rf"fsync\(\d+<{re.escape(folder)}>\)", call) for call in calls[renamed:]), folder
