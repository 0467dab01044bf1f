"""Side-by-side benchmark on one local server: this build, Mirage's own loop, and
parallel curl | pigz, on the same files, at a capped speed per connection.

    python bench/run.py                         # what docs/benchmarks.md records
    python bench/run.py --files 8 --size-mb 100 --rate-mb 20 --latency 0.02 --out docs/benchmarks.md
    python bench/run.py --segments --size-mb 1000 --rate-mb 20 --out docs/segments.md   # needs aria2c, pigz
    python bench/run.py --timeline --size-mb 100 --before ../main   # where a one-file build's seconds go

It also times the whole table of small files, a no-op run, dry runs of
growing synthetic tables, and the memory and disk writes of one big download.
Everything it makes goes under --dir (default: a folder in /tmp).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import pandas as pd  # noqa: E402

from mirage_reffiles.sources.mirage import load_table  # noqa: E402
from mirage_reffiles.testing.mirror import FITS_CARD, build_mirror, synthetic_bytes  # noqa: E402
from mirage_reffiles.testing.server import serve  # noqa: E402
from mirage_reffiles.tree.layout import TARBALL_FOLDERS, TARBALL_ROOT, tarball_member_destination  # noqa: E402

TABLE = REPO / "config" / "reference_files.csv"
BLOCK = 8 << 20


def sectors_written(path: Path) -> int:
    """Sectors the disk holding ``path`` has written since boot (``/sys/dev/block/*/stat``, field 7)."""
    device = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/stat").read_text().split()
    return int(stat[6])


def settle(warm: Path | None = None) -> None:
    """Start each measured run from the same state: dirty pages written, the page cache emptied (as root),
    then the files the server reads (``warm``, a file or folder) read back into it.

    A full page cache makes every write reclaim memory first, so runs late in a session were up to
    15 % slower than the same runs early in it.
    """
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return  # not root: the cache stays as it is
    for path in [warm] if warm is not None and warm.is_file() else sorted(warm.rglob("*")) if warm else []:
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(BLOCK):
                    pass


def machine() -> str:
    """The machine a run measured, in words: its cores, how busy they were before it began, and that the
    test server shares them (it runs in this process)."""
    load = os.getloadavg()[0]
    return (f"a machine of {os.cpu_count()} cores (load average {load:.1f} when the run began; the test server "
            "runs on the same cores, sharing them with what it serves)")  # fmt: skip


def run_measured(command: list[str], cwd: Path, env: dict | None = None, warm: Path | None = None) -> dict:
    """Wall time, peak RSS of the largest process, and bytes ``command`` made the disk write.

    Bytes written are counted at the disk, after a ``sync``: what reaches it,
    not what passes through the page cache (a resume point's compressed bytes
    are deleted before they are written back). The machine should be
    otherwise idle.
    """
    rss_file = cwd / ".peak_rss"
    settle(warm)
    before = sectors_written(cwd)
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *command],
        cwd=cwd, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    subprocess.run(["sync"], check=True)
    written = (sectors_written(cwd) - before) * 512
    if result.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{result.stderr[-3000:]}")
    return {"wall": wall, "rss_mb": int(rss_file.read_text().split()[-1]) / 1024, "written": written}


def write_dark(path: Path, seed: str, size: int) -> str:
    """A gzip file of ``size`` made-up bytes (about 2:1), written in blocks; returns the SHA-256 of the content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with gzip.GzipFile(path, "wb", compresslevel=6, mtime=0) as out:
        for n, start in enumerate(range(0, size, BLOCK)):
            block = synthetic_bytes(f"{seed}/{n}", min(BLOCK, size - start))
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def snakemake(target: str, workdir: Path, settings: dict, *extra: str, checkout: Path = REPO) -> list[str]:
    """The command of a build of ``target`` in ``workdir``; ``checkout``: the project whose workflow runs (it
    puts its own package first on the path)."""
    config = [f"{key}={value}" for key, value in settings.items()]
    return [sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile"), "--cores", "8", target, *extra,
            "--config", *config]  # fmt: skip


def side_by_side(root: Path, files: int, size: int, rate: float, latency: float) -> list[dict]:
    """The three approaches on the same ``files`` darks of ``size`` bytes unpacked."""
    table = load_table(TABLE)
    rows = table[(table.instrument == "nircam") & (table.dark_type == "linearized")].iloc[:files].copy()
    mirror = root / f"mirror_{size}"  # made once per size, then reused
    expected = {}
    for row in rows.itertuples():
        served = mirror / row.path
        if not served.exists():
            expected[row.file_id] = write_dark(served, row.file_id, size)
            (served.parent / (served.name + ".sha256")).write_text(expected[row.file_id])
        expected[row.file_id] = (served.parent / (served.name + ".sha256")).read_text()
        rows.loc[row.Index, ["size_bytes", "size_exact", "sha256"]] = [
            str(served.stat().st_size),
            "true",
            sha256_file(served),
        ]
    table_csv = root / "bench_table.csv"
    rows.to_csv(table_csv, index=False)
    compressed = sum(int(s) for s in rows.size_bytes)
    results = []
    with serve(mirror, rate=rate, latency=latency) as server:
        for name in ("this build (--cores 8)", "Mirage's downloader loop", "parallel curl | pigz -d (8)"):
            work = root / f"run_{len(results)}"
            subprocess.run(["rm", "-rf", str(work)], check=True)
            work.mkdir()
            mirage_data = work / "mirage_data"
            pairs = [(server.url + row.path, str(mirage_data / row.destination)) for row in rows.itertuples()]
            if name.startswith("this build"):
                settings = {"base_url": server.url, "mirage_data": mirage_data, "reference_table": table_csv,
                            "instrument": "nircam"}  # fmt: skip
                command = snakemake("all", work, settings)
            elif name.startswith("Mirage"):
                command = [sys.executable, str(REPO / "bench" / "mirage_loop.py"), str(work / "download")]
                command += [item for pair in pairs for item in pair]
            else:
                for _, dest in pairs:
                    Path(dest).parent.mkdir(parents=True, exist_ok=True)
                (work / "pairs.txt").write_text("".join(f"{url} {dest}\n" for url, dest in pairs))
                inner = 'curl -sS --fail "$0" | pigz -d > "$1"'
                command = ["sh", "-c", f"xargs -P 8 -n 2 sh -c '{inner}' < pairs.txt"]
            measured = run_measured(command, work)
            for row in rows.itertuples():
                if sha256_file(mirage_data / row.destination) != expected[row.file_id]:
                    raise SystemExit(f"{name}: wrong bytes in {row.destination}")
            results.append({"name": name, "compressed": compressed, **measured})
    return results


def check_outputs(name: str, mirage_data: Path, expected: dict[str, str]) -> None:
    """Stop the benchmark unless every file under ``mirage_data`` named in ``expected`` has its SHA-256."""
    for destination, sha256 in expected.items():
        if sha256_file(mirage_data / destination) != sha256:
            raise SystemExit(f"{name}: wrong bytes in {destination}")


def download_time(mirage_data: Path) -> float | None:
    """The seconds this build's job took for its download, from its log (None for the other approaches)."""
    for log in (mirage_data / ".reffiles" / "logs").rglob("*.log"):
        if match := re.search(r": done, .* in ([0-9.]+) s ", log.read_text()):
            return float(match.group(1))
    return None


def big_dark(mirror: Path, path: str, size: int) -> tuple[str, str]:
    """One dark of ``size`` unpacked bytes at ``mirror/path``, made once: (SHA-256 of the gzip, of its content)."""
    served = mirror / path
    stamp = served.parent / (served.name + ".sha256")
    if not stamp.exists():
        content = write_dark(served, "big", size)
        stamp.write_text(f"{sha256_file(served)} {content}")
    archive, content = stamp.read_text().split()
    return archive, content


def served_dark(root: Path, size: int, table_name: str):
    """One NIRCam dark of ``size`` bytes unpacked in a mirror under ``root``, and a table of that row alone,
    pinned to it: ``(row, mirror, served file, unpacked SHA-256, table CSV)``."""
    table = load_table(TABLE)
    row = table[(table.instrument == "nircam") & (table.dark_type == "linearized")].iloc[[0]].copy()
    mirror = root / f"mirror_{size}"
    archive, content = big_dark(mirror, row.path.iloc[0], size)
    served = mirror / row.path.iloc[0]
    row[["size_bytes", "size_exact", "sha256"]] = [str(served.stat().st_size), "true", archive]
    table_csv = root / table_name
    row.to_csv(table_csv, index=False)
    return row, mirror, served, content, table_csv


def one_dark(root: Path, size: int, rate: float, latency: float, baseline: Path | None = None) -> list[dict]:
    """Case 1: one dark, this build (segments over the cap of 8) vs aria2c -x8 -s8 + pigz -d vs one curl | pigz -d."""
    row, mirror, served, content, table_csv = served_dark(root, size, "one_dark.csv")
    destination = row.destination.iloc[0]
    results = []
    with serve(mirror, rate=rate, latency=latency) as server, serve(mirror, latency=latency) as uncapped:
        url = server.url + row.path.iloc[0]
        approaches = ("this build (segments, cap 8)", "aria2c -x8 -s8, then pigz -d", "one curl | pigz -d",
                      "this build, no rate cap (the machine's floor)")  # fmt: skip
        approaches += ("this build as --before has it (segments, cap 8)",) if baseline else ()
        for name in approaches:
            work = root / f"one_{len(results)}"
            subprocess.run(["rm", "-rf", str(work)], check=True)
            mirage_data = work / "mirage_data"
            output = mirage_data / destination
            output.parent.mkdir(parents=True)
            if name.startswith("this build"):
                source = uncapped.url if "no rate cap" in name else server.url
                settings = {"base_url": source, "mirage_data": mirage_data, "reference_table": table_csv,
                            "instrument": "nircam"}  # fmt: skip
                command = snakemake("all", work, settings, checkout=baseline if "--before" in name else REPO)
            elif name.startswith("aria2c"):
                gz = f"{output.name}.gz"
                command = ["sh", "-c", f"aria2c -q -x8 -s8 --file-allocation=none -d '{output.parent}' -o '{gz}' "
                           f"'{url}' && pigz -d '{output.parent / gz}'"]  # fmt: skip
            else:
                command = ["sh", "-c", f"curl -sS --fail '{url}' | pigz -d > '{output}'"]
            used = uncapped if "no rate cap" in name else server
            before = len(used.gets())
            measured = run_measured(command, work, warm=served)
            check_outputs(name, mirage_data, {destination: content})
            connections = len(used.gets()) - before
            results.append({"name": name, "compressed": served.stat().st_size, "requests": connections,
                            "download": download_time(mirage_data), **measured})  # fmt: skip
    return results


def incompressible_dark(path: Path, seed: str, size: int) -> tuple[str, str]:
    """A gzip file of ``size`` random bytes (as a FGS dark: it barely compresses), made once:
    (SHA-256 of the gzip, of its content)."""
    stamp = path.parent / (path.name + ".sha256")
    if not stamp.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generator, digest = random.Random(seed), hashlib.sha256()
        with gzip.GzipFile(path, "wb", compresslevel=1, mtime=0) as out:
            for start in range(0, size, BLOCK):
                block = generator.randbytes(min(BLOCK, size - start))
                if not start:
                    block = FITS_CARD + block[len(FITS_CARD) :]  # a FITS file's first card, as every dark
                digest.update(block)
                out.write(block)
        stamp.write_text(f"{sha256_file(path)} {digest.hexdigest()}")
    archive, content = stamp.read_text().split()
    return archive, content


def slow_pair(root: Path, size: int, rate: float, latency: float, baseline: Path | None = None) -> list[dict]:
    """Case 3: two FGS darks of ``size`` random bytes on slow connections, 8 in all: this build (cap 8) vs
    aria2c with 8 connections in all (4 per file, two files at once), then pigz -d."""
    table = load_table(TABLE)
    rows = table[(table.instrument == "fgs") & (table.kind == "dark") & (table.dark_type == "raw")].iloc[:2].copy()
    mirror = root / f"slow_{size}"
    expected = {}
    for row in rows.itertuples():
        archive, expected[row.destination] = incompressible_dark(mirror / row.path, row.file_id, size)
        rows.loc[row.Index, ["size_bytes", "size_exact", "sha256"]] = [
            str((mirror / row.path).stat().st_size), "true", archive]  # fmt: skip
    table_csv = root / "slow_pair.csv"
    rows.to_csv(table_csv, index=False)
    compressed = sum(int(n) for n in rows.size_bytes)
    results = []
    with serve(mirror, rate=rate, latency=latency) as server:
        names = ("this build (cap 8)", "aria2c -j2 -x4 -s4, then pigz -d")
        for name in names + (("this build as --before has it (cap 8)",) if baseline else ()):
            work = root / f"slow_{len(results)}"
            subprocess.run(["rm", "-rf", str(work)], check=True)
            mirage_data = work / "mirage_data"
            outputs = [mirage_data / row.destination for row in rows.itertuples()]
            for output in outputs:
                output.parent.mkdir(parents=True, exist_ok=True)
            if name.startswith("this build"):
                settings = {"base_url": server.url, "mirage_data": mirage_data, "reference_table": table_csv,
                            "instrument": "fgs", "dark_type": "raw"}  # fmt: skip
                command = snakemake("all", work, settings, checkout=baseline if "--before" in name else REPO)
            else:
                listing = work / "urls.txt"
                listing.write_text("".join(
                    f"{server.url}{row.path}\n  dir={output.parent}\n  out={output.name}.gz\n"
                    for row, output in zip(rows.itertuples(), outputs, strict=True)))  # fmt: skip
                unpack = " ".join(f"'{output}.gz'" for output in outputs)
                command = ["sh", "-c", f"aria2c -q -j2 -x4 -s4 --min-split-size=1M --file-allocation=none "
                           f"-i '{listing}' && pigz -d {unpack}"]  # fmt: skip
            before = len(server.gets())
            measured = run_measured(command, work, warm=mirror)
            check_outputs(name, mirage_data, {row.destination: expected[row.destination] for row in rows.itertuples()})
            gets = server.gets()[before:]
            results.append({"name": name, "compressed": compressed, "requests": len(gets),
                            "served": max(r.ended for r in gets) - min(r.time for r in gets), **measured})  # fmt: skip
    return results


def build_shape(root: Path, dark_size: int, tarball_sizes: list[int], rate: float, latency: float) -> dict:
    """Case 2: `nircam_linearized` with single_dark: ten darks (copies of one) and seven tarballs, cap 8."""
    table = load_table(TABLE)
    nircam = table[table.instrument == "nircam"]
    darks = nircam[(nircam.kind == "dark") & (nircam.dark_type == "linearized") & (nircam.single_dark == "true")]
    tarballs = nircam[nircam.archive == "tar.gz"]
    rows = pd.concat([darks, tarballs]).copy()
    mirror = root / f"shape_{dark_size}"
    archive, content = big_dark(root / f"mirror_{dark_size}", darks.path.iloc[0], dark_size)
    expected = {}
    for row, size in zip(tarballs.itertuples(), tarball_sizes, strict=True):
        served = mirror / row.path
        folder = TARBALL_FOLDERS[row.kind].format(instrument=row.instrument)
        member = f"{TARBALL_ROOT}/{folder}/{row.file_id}.fits"
        if not served.exists():
            served.parent.mkdir(parents=True, exist_ok=True)
            staging = root / "tar_staging"
            subprocess.run(["rm", "-rf", str(staging)], check=True)
            (staging / member).parent.mkdir(parents=True)
            with open(staging / member, "wb") as out:
                for n, start in enumerate(range(0, size, BLOCK)):
                    out.write(synthetic_bytes(f"{row.file_id}/{n}", min(BLOCK, size - start)))
            subprocess.run(f"tar -C '{staging}' -cf - {TARBALL_ROOT} | pigz -6 > '{served}'", shell=True, check=True)
            (served.parent / (served.name + ".sha256")).write_text(sha256_file(staging / member))
        expected[tarball_member_destination(member)] = (served.parent / (served.name + ".sha256")).read_text()
    for row in darks.itertuples():
        served = mirror / row.path
        if not served.exists():
            served.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", str(root / f"mirror_{dark_size}" / darks.path.iloc[0]), str(served)], check=True)
        expected[row.destination] = content
    for row in rows.itertuples():
        served = mirror / row.path
        digest = archive if row.archive == "gz" else sha256_file(served)
        rows.loc[row.Index, ["size_bytes", "size_exact", "sha256"]] = [str(served.stat().st_size), "true", digest]
    table_csv = root / "shape.csv"
    rows.to_csv(table_csv, index=False)
    compressed = sum(int(s) for s in rows.size_bytes)
    runs = []
    with serve(mirror, rate=rate, latency=latency) as server, serve(mirror, latency=latency) as uncapped:
        for source in (server.url, uncapped.url):  # then without the rate cap: what this machine allows
            work = root / "shape_run"
            subprocess.run(["rm", "-rf", str(work)], check=True)
            work.mkdir()
            settings = {"base_url": source, "mirage_data": work / "mirage_data", "reference_table": table_csv,
                        "single_dark": "true", "ignore_free_space": "true"}  # fmt: skip
            runs.append(run_measured(snakemake("nircam_linearized", work, settings), work, warm=mirror))
            check_outputs("build shape", work / "mirage_data", expected)
        requests = len(server.gets())
    measured, floor = runs
    return {"files": len(rows), "compressed": compressed, "requests": requests, "limit": compressed / (8 * rate),
            "floor": floor["wall"], **measured}  # fmt: skip


#: The phases of a one-file build, in order: (name, from, to), each end an event of bench/timeline.py
#: ("begin phase", "end phase", first or last of that name) or of the server ("first GET", "last byte").
BREAKDOWN = [
    ("Python starts", ("first", "begin process"), ("first", "begin import snakemake")),
    ("importing Snakemake", ("first", "begin import snakemake"), ("first", "end import snakemake")),
    ("importing mirage_reffiles", ("first", "begin import mirage_reffiles"), ("first", "end import mirage_reffiles")),
    (
        "Snakemake's command line, profile and plugins",
        ("first", "end import mirage_reffiles"),
        ("first", "begin read the workflow"),
    ),
    (
        "Snakemake's parser, before the Snakefile's first line (it imports smart_open)",
        ("first", "begin read the workflow"),
        ("second", "begin read the workflow"),
    ),
    (
        "the workflow's own code: imports, settings, tables, groups",
        ("second", "begin read the workflow"),
        ("last", "end read the workflow"),
    ),
    ("  of which checking the config", ("first", "begin check the config"), ("first", "end check the config")),
    (
        "  of which loading and checking the table",
        ("first", "begin load and check the table"),
        ("first", "end load and check the table"),
    ),
    ("the DAG and the plan", ("last", "end read the workflow"), ("first", "begin probe the server")),
    ("the server probe (one HEAD request)", ("first", "begin probe the server"), ("first", "end probe the server")),
    ("scheduling, onstart (the display)", ("first", "end probe the server"), ("first", "begin the job")),
    ("the job, up to its first request", ("first", "begin the job"), ("first", "first GET")),
    ("the download (first request to last byte sent)", ("first", "first GET"), ("first", "last byte")),
    ("the job after its last byte: checks, rename, record", ("first", "last byte"), ("last", "end the job")),
    ("Snakemake's bookkeeping of the finished job", ("last", "end the job"), ("first", "begin settle")),
    ("settle, the display's end and summary, the env file", ("first", "begin settle"), ("last", "end env file")),
    ("Snakemake's end, the interpreter's exit", ("last", "end env file"), ("first", "command returned")),
]


def timeline(root: Path, size: int, rate: float, latency: float, checkout: Path, runs: int = 3) -> dict:
    """Case 4: one dark fetched by a build under bench/timeline.py, ``runs`` times: the median seconds of each
    phase of BREAKDOWN, and of the whole command. ``checkout`` is the project whose Snakefile and package run."""
    row, mirror, served, content, table_csv = served_dark(root, size, "timeline.csv")
    phases: dict[str, list[float]] = {}
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    with serve(mirror, rate=rate, latency=latency) as server:
        for _ in range(runs):
            work = root / "timeline_run"
            subprocess.run(["rm", "-rf", str(work)], check=True)
            work.mkdir()
            settings = {"base_url": server.url, "mirage_data": work / "mirage_data", "reference_table": table_csv,
                        "instrument": "nircam"}  # fmt: skip
            command = snakemake("all", work, settings)
            command[1:5] = [
                str(REPO / "bench" / "timeline.py"),
                str(work / "events.txt"),
                "-s",
                str(checkout / "Snakefile"),
            ]
            settle(served)
            before = len(server.gets())
            began = time.monotonic()
            result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
            ended = time.monotonic()
            if result.returncode != 0:
                raise SystemExit(f"timeline run failed:\n{result.stderr[-3000:]}")
            check_outputs("timeline", work / "mirage_data", {row.destination.iloc[0]: content})
            gets = server.gets()[before:]
            events: dict[str, list[float]] = {
                "first GET": [min(r.time for r in gets)],
                "last byte": [max(r.ended for r in gets)],
                "command returned": [ended],
            }
            for line in (work / "events.txt").read_text().splitlines():
                moment, name = line.split(" ", 1)
                events.setdefault(name, []).append(float(moment))
            pick = {"first": 0, "second": 1, "last": -1}
            for name, (which, start), (which_end, end) in BREAKDOWN:
                seconds = events[end][pick[which_end]] - events[start][pick[which]]
                phases.setdefault(name, []).append(seconds)
            collected = sum(b - a for a, b in zip(events.get("begin gc2", []), events.get("end gc2", []), strict=True))
            phases.setdefault("garbage collection of all objects (gen 2), in all", []).append(collected)
            phases.setdefault("the command, in all", []).append(ended - began)
    return {name: sorted(values)[len(values) // 2] for name, values in phases.items()}


def whole_table(root: Path) -> dict:
    """All 169 files, both dark types, from a mirror of small files; then a no-op run."""
    mirror = root / "small_mirror"
    table_csv = root / "small_table.csv"
    if not table_csv.exists():
        pinned, _ = build_mirror(mirror, load_table(TABLE), size=32_768)
        pinned.to_csv(table_csv, index=False)
    work = root / "whole_table"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir()
    with serve(mirror) as server:
        settings = {"base_url": server.url, "mirage_data": work / "mirage_data", "reference_table": table_csv,
                    "dark_type": "both"}  # fmt: skip
        build = run_measured(snakemake("all", work, settings), work)
        requests = len(server.requests)
        noops = sorted(run_measured(snakemake("all", work, settings), work)["wall"] for _ in range(3))
        assert len(server.requests) == requests, "the no-op run sent requests"
    return {"files": requests, "build": build["wall"], "noop": noops[1]}  # the median of three


def dry_runs(root: Path, sizes: list[int]) -> list[tuple[int, float]]:
    """Dry runs of `all` over synthetic tables of growing size (copies of one dark's row)."""
    template = load_table(TABLE).iloc[[60]]  # a NIRCam linearized dark
    timings = []
    for rows in sizes:
        table = template.loc[template.index.repeat(rows)].reset_index(drop=True)
        numbers = [f"{n:05}" for n in range(rows)]
        table["file_id"] = [f"synthetic_{n}" for n in numbers]
        table["path"] = [f"nircam/darks/linearized/A1/synthetic_{n}.fits.gz" for n in numbers]
        table["destination"] = [f"nircam/darks/linearized/A1/synthetic_{n}.fits" for n in numbers]
        table["single_dark"] = "false"
        table_csv = root / f"synthetic_{rows}.csv"
        table.to_csv(table_csv, index=False)
        work = root / f"dry_{rows}"
        work.mkdir(exist_ok=True)
        settings = {"base_url": "http://127.0.0.1:9/", "mirage_data": work / "mirage_data",
                    "reference_table": table_csv, "instrument": "nircam"}  # fmt: skip
        timings.append((rows, run_measured(snakemake("all", work, settings, "-n", "--quiet"), work)["wall"]))
    return timings


def big_file(root: Path, size: int) -> dict:
    """One download of ``size`` unpacked bytes, fetched by the job code alone: peak RSS and bytes written."""
    mirror = root / "big_mirror"
    served = mirror / "nircam/darks/linearized/A1/big.fits.gz"
    if not served.exists():
        write_dark(served, "big", size)
    work = root / "big_run"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir()
    with serve(mirror) as server:
        code = (
            "from pathlib import Path; from mirage_reffiles.transfer.fetch import fetch_gzip; "
            f"fetch_gzip({server.url + 'nircam/darks/linearized/A1/big.fits.gz'!r}, Path('mirage_data'), 'big', "
            "'nircam/darks/linearized/A1/big.fits')"
        )
        measured = run_measured([sys.executable, "-c", code], work, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    unpacked = (work / "mirage_data/nircam/darks/linearized/A1/big.fits").stat().st_size
    compressed = served.stat().st_size
    return {**measured, "compressed": compressed, "unpacked": unpacked}


def report(args, pair: list[dict], table: dict, dry: list[tuple[int, float]], big: dict | None) -> str:
    ours, mirage, limit = pair
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {time.strftime('%Y-%m-%d')}, on {args.machine}, with:",
        "",
        "```bash",
        "python bench/run.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"## {args.files} darks of {args.size_mb} MB, at {args.rate_mb} MB/s per connection, "
        f"{args.latency * 1000:.0f} ms latency",
        "",
        "One local HTTP server (tests' `mirage_reffiles.server`) caps each connection; all three fetch and "
        "gunzip the same files, and each result is checked byte for byte. Disk writes are counted at the disk "
        "(`/sys/dev/block/*/stat`, after a `sync`): bytes that pass through the page cache and are deleted "
        "before the kernel writes them back do not count.",
        "",
        "| approach | wall (s) | MB/s (compressed) | vs this build | peak RSS, largest process (MB) "
        "| disk writes / fetched bytes |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in pair:
        lines.append(
            f"| {result['name']} | {result['wall']:.1f} | {result['compressed'] / result['wall'] / 1e6:.1f} | "
            f"{result['wall'] / ours['wall']:.2f}x | {result['rss_mb']:.0f} | "
            f"{result['written'] / result['compressed']:.2f} |"
        )
    lines += [
        "",
        f"This build is {mirage['wall'] / ours['wall']:.1f}x faster than Mirage's loop (target: 5x) and runs at "
        f"{limit['wall'] / ours['wall']:.2f}x the speed of parallel curl | pigz (target: 0.9x). Its largest process "
        "is Snakemake itself: every download runs as one of its threads.",
        "",
        f"On the {os.cpu_count()} cores of this machine, all three may be bound by the CPU (and the disk) more than "
        "by the connections. This build spends about 2 s starting Snakemake before its first request (see "
        "--timeline), a fixed cost that "
        "files of a few hundred MB do not hide (Mirage's real darks are 1.4 to 6 GB compressed); on bytes it is "
        "cheaper than curl | pigz: zlib-ng's inflate, the CRC-32 gunzipping needs anyway instead of a second "
        "digest of the unpacked bytes, and of the compressed bytes only those since the last resume point "
        "written to disk.",
    ]
    if table is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Per-file overhead and scale",
        "",
        "| what | wall (s) | target |",
        "| --- | ---: | --- |",
        f"| whole table ({table['files']} files, both dark types, 32 KB each) | {table['build']:.1f} | < 10 s |",
        f"| no-op run of `all` over that complete tree (median of 3) | {table['noop']:.1f} | < 3 s |",
    ]
    lines += [f"| dry run of `all`, synthetic table of {rows:,} rows | {wall:.1f} | < 30 s at 10k, linear |"
              for rows, wall in dry]  # fmt: skip
    if len(dry) > 1:
        (r0, w0), (r1, w1) = dry[0], dry[-1]
        lines += ["", f"Dry-run cost per extra row: {(w1 - w0) / (r1 - r0) * 1000:.2f} ms "
                      f"(fixed start-up about {w0 - (w1 - w0) / (r1 - r0) * r0:.1f} s)."]  # fmt: skip
    if big:
        ratio = big["unpacked"] / big["compressed"]
        lines += [
            "",
            f"## One big download: {big['unpacked'] / 1e9:.1f} GB unpacked ({big['compressed'] / 1e9:.2f} GB gzip)",
            "",
            "| peak RSS of the job (MB) | target | disk writes / fetched bytes | limit (1 + unpacked ratio) |",
            "| ---: | --- | ---: | ---: |",
            f"| {big['rss_mb']:.0f} | < 150 MB | {big['written'] / big['compressed']:.2f} | {1 + ratio:.2f} |",
            "",
            "The job code runs alone here (`fetch_gzip` in a fresh Python): what a download costs whatever runs it.",
        ]
    return "\n".join(lines) + "\n"


def segments_report(args, slow: list[dict], one: list[dict], shape: dict | None) -> str:
    ours, aria, single, floor = one[:4]
    wire = ours["compressed"] / (8 * args.rate_mb * 1e6)
    lines = [
        "## Segmented downloads",
        "",
        f"Measured on {time.strftime('%Y-%m-%d')}, on {args.machine} (all rows of a table come "
        "from one run, back to back; each measured run starts from an emptied page cache with the served files "
        "read back into it), with:",
        "",
        "```bash",
        "python bench/run.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"### One dark of {args.size_mb} MB ({ours['compressed'] / 1e6:.0f} MB gzip) at {args.rate_mb} MB/s per "
        "connection",
        "",
        "| approach | wall (s) | the download itself (s) | MB/s (compressed) | vs this build | requests "
        "| peak RSS (MB) | disk writes / fetched bytes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in one:
        itself = f"{result['download']:.1f}" if result.get("download") else "(all of it)"
        lines.append(
            f"| {result['name']} | {result['wall']:.1f} | {itself} | "
            f"{result['compressed'] / result['wall'] / 1e6:.1f} | {result['wall'] / ours['wall']:.2f}x | "
            f"{result['requests']} | {result['rss_mb']:.0f} | {result['written'] / result['compressed']:.2f} |"
        )
    lines += [
        "",
        f"This build is {single['wall'] / ours['wall']:.1f}x faster than one connection (target: 5x; its download "
        f"itself, without Snakemake's start and end, {single['wall'] / (ours['download'] or ours['wall']):.1f}x) and "
        f"{aria['wall'] / ours['wall']:.2f}x the speed of aria2c + pigz (target: at least 1x). The wire's limit, "
        f"8 x {args.rate_mb} MB/s, is {wire:.1f} s; the build's wall time includes Snakemake's start and end "
        f"({ours['wall'] - (ours['download'] or ours['wall']):.1f} s here). The last row is this machine's floor: "
        "the same build "
        f"from the same server without its rate cap ({floor['wall']:.1f} s: unpacking, writing and serving on "
        f"{os.cpu_count()} cores); capped, the build takes {ours['wall'] / max(floor['wall'], wire):.2f}x the larger "
        "of that floor and the wire's limit.",
    ]
    ours, aria = slow[:2]
    wire = ours["compressed"] / (8 * args.slow_rate_mb * 1e6)
    lines += [
        "",
        f"### Two darks of {args.slow_mb} MB of random bytes ({ours['compressed'] / 2e6:.0f} MB gzip each) at "
        f"{args.slow_rate_mb} MB/s per connection, 8 connections",
        "",
        "| approach | wall (s) | first request to last byte (s) | vs the wire's limit | vs aria2c + pigz | requests "
        "| peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in slow:
        lines.append(
            f"| {result['name']} | {result['wall']:.1f} | {result['served']:.1f} | {result['wall'] / wire:.2f}x | "
            f"{result['wall'] / aria['wall']:.2f}x | {result['requests']} | {result['rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"The wire's limit, 8 x {args.slow_rate_mb} MB/s, is {wire:.1f} s. This build takes "
        f"{ours['wall'] / aria['wall']:.2f}x the time of aria2c + pigz (target: at most 1.10x); its wall time "
        f"includes Snakemake's start and end ({ours['wall'] - ours['served']:.1f} s here, against "
        f"{aria['wall'] - aria['served']:.1f} s of aria2c's start and pigz).",
    ]
    if shape:
        lines += [
            "",
            f"### The shape of `nircam_linearized` with `single_dark`: {shape['files']} files, "
            f"{shape['compressed'] / 1e9:.2f} GB gzip",
            "",
            f"Ten darks of {args.size_mb} MB and seven tarballs of "
            f"{', '.join(str(n) for n in args.tarball_mb)} MB, at {args.rate_mb} MB/s per connection, cap 8.",
            "",
            "| wall (s) | wire's limit (s) | ratio (target <= 1.15) | no rate cap (s) | ratio to the larger "
            "| requests | peak RSS (MB) | disk writes / fetched bytes |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {shape['wall']:.1f} | {shape['limit']:.1f} | {shape['wall'] / shape['limit']:.2f} | "
            f"{shape['floor']:.1f} | {shape['wall'] / max(shape['floor'], shape['limit']):.2f} | "
            f"{shape['requests']} | {shape['rss_mb']:.0f} | {shape['written'] / shape['compressed']:.2f} |",
        ]
    return "\n".join(lines) + "\n"


def timeline_report(args, columns: dict[str, dict]) -> str:
    lines = [
        f"Measured on {time.strftime('%Y-%m-%d')}, on {args.machine}, median of three runs each, with:",
        "",
        "```bash",
        "python bench/run.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        "| phase (s) | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for name in next(iter(columns.values())):
        lines.append(f"| {name} | " + " | ".join(f"{phases[name]:.3f}" for phases in columns.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size-mb", type=int, default=100, help="unpacked size of each dark")
    parser.add_argument("--rate-mb", type=float, default=20, help="cap per connection, MB/s")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds before each answer")
    parser.add_argument("--dry-rows", default="1000,5000,10000", help="sizes of the synthetic tables")
    parser.add_argument("--big-gb", type=float, default=2, help="unpacked size of the big download; 0 skips it")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mirage_reffiles_bench")
    parser.add_argument("--out", type=Path, help="also write the report here (e.g. docs/benchmarks.md)")
    parser.add_argument("--only-side-by-side", action="store_true", help="skip the overhead, scale and big-file runs")
    parser.add_argument(
        "--segments",
        action="store_true",
        help="instead: two slow darks vs aria2c + pigz, one dark vs aria2c + pigz and one curl, then the shape of "
        "nircam_linearized",
    )
    parser.add_argument(
        "--tarball-mb",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[300, 400, 400, 400, 400, 200, 20],
        help="unpacked sizes of the seven tarballs",
    )
    parser.add_argument("--no-shape", action="store_true", help="with --segments: not the shape of nircam_linearized")
    parser.add_argument("--slow-mb", type=int, default=50, help="with --segments: size of each of two slow darks")
    parser.add_argument("--slow-rate-mb", type=float, default=2, help="with --segments: their cap per connection")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="instead: where the seconds of a one-file build go, for this checkout and --before",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="with --timeline or --segments: another checkout's build beside this one's (e.g. a checkout of main)",
    )
    args = parser.parse_args()
    args.machine = machine()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.timeline:
        size, rate = args.size_mb * 10**6, args.rate_mb * 10**6
        columns = {"this checkout": timeline(args.dir, size, rate, args.latency, REPO)}
        if args.before:
            columns = {"before": timeline(args.dir, size, rate, args.latency, args.before), **columns}
        text = timeline_report(args, columns)
        print(text)
        if args.out:
            args.out.write_text(text)
        return
    if args.segments:
        rate = args.rate_mb * 10**6
        slow = slow_pair(args.dir, args.slow_mb * 10**6, args.slow_rate_mb * 10**6, args.latency, args.before)
        one = one_dark(args.dir, args.size_mb * 10**6, rate, args.latency, args.before)
        shape = None
        if not args.no_shape:
            sizes = [n * 10**6 for n in args.tarball_mb]
            shape = build_shape(args.dir, args.size_mb * 10**6, sizes, rate, args.latency)
        text = segments_report(args, slow, one, shape)
        print(text)
        if args.out:
            args.out.write_text(text)
        return
    pair = side_by_side(args.dir, args.files, args.size_mb * 10**6, args.rate_mb * 10**6, args.latency)
    if args.only_side_by_side:
        print(report(args, pair, None, [], None))
        return
    table = whole_table(args.dir)
    dry = dry_runs(args.dir, [int(n) for n in args.dry_rows.split(",") if n])
    big = big_file(args.dir, int(args.big_gb * 10**9)) if args.big_gb else None
    text = report(args, pair, table, dry, big)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
