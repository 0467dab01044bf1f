"""A CRDS cache that resolves with no server: the mappings of a pinned context, the cache's
config files, and every reference file Mirage asks for, each one downloaded and checked.

The selection rules are CRDS's own: :func:`best_references` asks the real
``crds`` library (the ``crds`` extra), in a separate process with a clean
environment, so that ``crds``'s global state never reaches the calling
process. The server is only asked through its JSON-RPC calls
(``get_server_info``, ``get_mapping_names``, ``get_file_info_map``) and its
download URLs.
"""

from __future__ import annotations

import base64
import csv
import datetime
import gzip
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mirage_reffiles.adapters.envfile import SERVERLESS_URL
from mirage_reffiles.errors import FetchError, ServerUnreachable, TransientError, UsageError, VerifyError
from mirage_reffiles.sources import rows
from mirage_reffiles.transfer.clock import Clock
from mirage_reffiles.transfer.fetch import twice_on_bad_bytes
from mirage_reffiles.transfer.http import Expected, RetryPolicy, download
from mirage_reffiles.transfer.partial import remove_partial
from mirage_reffiles.transfer.progress import Progress
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.disk import exclusive, require_free_space, take_final_names, write_atomically
from mirage_reffiles.tree.door import BOOKKEEPING, Lane, is_plain_name, writable

OBSERVATORY = "jwst"
#: Mirage's reference types (mirage/utils/constants.py: CRDS_FILE_TYPES).
MIRAGE_TYPES = ("mask", "distortion", "gain", "ipc", "linearity", "area", "saturation", "superbias", "flat", "photom")
#: Columns of the modes file: the FITS keywords Mirage passes to crds.getreferences.
MODE_COLUMNS = ("INSTRUME", "DETECTOR", "FILTER", "PUPIL", "READPATT", "EXP_TYPE", "SUBARRAY", "CHANNEL",
                "DATE-OBS", "TIME-OBS")  # fmt: skip
REQUIRED_COLUMNS = ("INSTRUME", "DETECTOR", "FILTER", "PUPIL", "READPATT", "EXP_TYPE")
INSTRUMENTS = ("NIRCAM", "NIRISS", "FGS")
#: This build's own files inside the cache (plans, partial downloads, locks, logs).
STATE_DIR = ".reffiles"
#: Mappings downloaded at once while a plan is made.
MAPPING_DOWNLOADS = 8


def state_dir(crds_path: Path) -> Path:
    return Path(crds_path) / STATE_DIR


def reference_path(crds_path: Path, instrument: str, name: str) -> Path:
    """Where crds looks for a reference file (``ref_cache_subdir_mode`` "instrument")."""
    return Path(crds_path) / "references" / OBSERVATORY / instrument.lower() / name


def read_modes(path: str | Path) -> list[dict[str, str]]:
    """The observing modes of a CSV file, one per row, as the FITS keywords crds expects.

    Blank cells are left out (SUBARRAY and CHANNEL apply to some modes only).
    Raises :class:`UsageError` for an unknown column or instrument or a missing value.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(line for line in handle if not line.lstrip().startswith("#")))
            columns = [name.strip().upper() for name in (rows[0].keys() if rows else [])]
    except OSError as error:
        raise UsageError(f"cannot read the CRDS modes file {path}: {error.strerror}") from None
    if not rows:
        raise UsageError(f"the CRDS modes file {path} lists no observing mode")
    if unknown := sorted(set(columns) - set(MODE_COLUMNS)):
        raise UsageError(f"{path}: unknown column {', '.join(unknown)}; the columns are: {', '.join(MODE_COLUMNS)}")
    modes = []
    for number, row in enumerate(rows, start=2):
        mode = {key.strip().upper(): (value or "").strip().upper() for key, value in row.items() if key}
        mode = {key: value for key, value in mode.items() if value}
        if missing := [key for key in REQUIRED_COLUMNS if key not in mode]:
            raise UsageError(
                f"{path}, line {number}: no {', '.join(missing)}; each mode needs {', '.join(REQUIRED_COLUMNS)}"
            )
        if mode["INSTRUME"] not in INSTRUMENTS:
            raise UsageError(f"{path}, line {number}: unknown instrument {mode['INSTRUME']!r}; "
                             f"Mirage simulates {', '.join(INSTRUMENTS)}")  # fmt: skip
        modes.append(mode)
    return modes


#: Each instrument's imaging EXP_TYPE: Mirage asks CRDS with it whatever the mode (its constants.EXPTYPES).
IMAGING_EXP_TYPES = {"NIRCAM": "NRC_IMAGE", "NIRISS": "NIS_IMAGE", "FGS": "FGS_IMAGE"}


def mode_from_yaml(path: str | Path) -> dict[str, str]:
    """The observing mode Mirage asks CRDS about for one of its input yaml files.

    As Mirage's ``crds_tools.dict_from_yaml``: the instrument, readout pattern,
    filter and pupil as written; the detector from the array name (``NRCA5_FULL``
    is ``NRCALONG``, ``FGS1_FULL`` is ``GUIDER1``); a full-frame SUBARRAY; the
    instrument's imaging EXP_TYPE; for NIRCam the channel its detector belongs to.
    """
    import yaml

    try:
        with open(path) as handle:
            settings = yaml.safe_load(handle)
        instrument = str(settings["Inst"]["instrument"]).upper()
        readout = settings["Readout"]
        detector = str(readout["array_name"]).split("_")[0].upper().replace("5", "LONG")
        mode = {"INSTRUME": instrument, "DETECTOR": detector, "FILTER": str(readout["filter"]).upper(),
                "PUPIL": str(readout["pupil"]).upper(), "READPATT": str(readout["readpatt"]).upper()}  # fmt: skip
    except OSError as error:
        raise UsageError(f"cannot read the Mirage yaml file {path}: {error.strerror}") from None
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise UsageError(f"{path} is not a Mirage input yaml file (no {error})") from None
    if instrument not in INSTRUMENTS:
        raise UsageError(f"{path}: unknown instrument {instrument!r}; Mirage simulates {', '.join(INSTRUMENTS)}")
    if instrument == "FGS":
        mode["DETECTOR"] = f"GUIDER{detector[-1]}"
    if instrument == "NIRCAM":
        mode["CHANNEL"] = "LONG" if detector.endswith("LONG") else "SHORT"
    return {**mode, "EXP_TYPE": IMAGING_EXP_TYPES[instrument], "SUBARRAY": "FULL"}


def gather_modes(modes_file: str | Path | None, yaml_files: Iterable[str | Path]) -> list[dict[str, str]]:
    """The distinct modes of a modes file and of Mirage yaml files, in order."""
    modes = (read_modes(modes_file) if modes_file else []) + [mode_from_yaml(path) for path in sorted(yaml_files)]
    distinct = {json.dumps(mode, sort_keys=True): mode for mode in modes}
    if not distinct:
        raise UsageError("no observing mode for the crds target: set crds_modes or crds_yaml_glob")
    return list(distinct.values())


def describe(mode: dict[str, str]) -> str:
    return " ".join(mode[key] for key in ("INSTRUME", "DETECTOR", "FILTER", "PUPIL", "EXP_TYPE"))


# --- The server: JSON-RPC and downloads -------------------------------------------------


def rpc(server_url: str, method: str, *params, timeout: float = 60.0, expect: type = object):
    """The result of one CRDS JSON-RPC call, which must be an ``expect``; the whole call (connecting,
    the answer) takes ``timeout`` seconds at most.

    The server's own error is a :class:`UsageError`; no answer in time is
    :class:`ServerUnreachable`; an answer this build cannot read is a
    :class:`FetchError` naming the server and the method.
    """
    url = f"{server_url.rstrip('/')}/json/{method}/mirage-reffiles-{uuid.uuid4()}/"
    body = json.dumps({"jsonrpc": "1.0", "method": method, "params": list(params), "id": 1}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with Clock(timeout, f"answer to {method}") as clock, clock.open(request, timeout) as response:
            text = response.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException, TransientError) as error:
        reason = getattr(error, "reason", error)
        raise ServerUnreachable(f"the CRDS server {server_url} did not answer {method}: {reason}") from None
    try:
        answer = json.loads(text)
    except ValueError:
        raise _malformed(server_url, method, f"{text[:40]!r}, not JSON") from None
    if not isinstance(answer, dict):
        raise _malformed(server_url, method, f"a JSON {_kind(answer)} where an object was expected")
    if answer.get("error"):
        error = answer["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise UsageError(f"the CRDS server {server_url} refused {method}: {message}")
    result = answer.get("result")
    if isinstance(result, dict) and "crds_encoded" in result:
        try:
            result = json.loads(gzip.decompress(base64.b64decode(result["crds_payload"], validate=True)))
        except (KeyError, TypeError, ValueError, OSError, EOFError, zlib.error) as error:
            what = f"an unreadable crds_payload ({error or type(error).__name__})"
            raise _malformed(server_url, method, what) from None
    if not isinstance(result, expect):
        raise _malformed(server_url, method, f"a {_kind(result)} where a {_kind(expect())} was expected")
    return result


def _kind(value) -> str:
    """The JSON name of ``value``'s type."""
    names = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def _malformed(server_url: str, method: str, what: str) -> FetchError:
    return FetchError(f"the CRDS server {server_url} answered {method} with {what}; "
                      "check that crds_server_url names a CRDS server")  # fmt: skip


def server_folder(server_url: str, key: str) -> str:
    """The server's URL of a folder (``mapping_url``, ``reference_url``) for JWST, from ``get_server_info``."""
    folders = rpc(server_url, "get_server_info", expect=dict).get(key)
    folder = folders.get(OBSERVATORY) if isinstance(folders, dict) else None
    if not isinstance(folder, str) or not folder.startswith(("http://", "https://")):
        raise _malformed(server_url, "get_server_info", f"no {key} for {OBSERVATORY} (it says {folders!r:.60})")
    return folder


def file_info(server_url: str, names: list[str]) -> dict[str, dict]:
    """``{name: {"size": int, "sha1sum": str}}`` from the server; a file it does not know is an error."""
    info = rpc(server_url, "get_file_info_map", OBSERVATORY, names, ["size", "sha1sum"], expect=dict)
    unknown = [name for name in names if not isinstance(info.get(name), dict)]
    if unknown:
        raise UsageError(f"the CRDS server {server_url} has no file {', '.join(unknown[:5])}")
    checked = {}
    for name in names:
        size, sha1sum = info[name].get("size"), info[name].get("sha1sum")
        if not re.fullmatch(r"\d{1,15}", str(size)) or not re.fullmatch(r"[0-9a-fA-F]{40}", str(sha1sum)):
            what = f"size {size!r:.30} and sha1sum {sha1sum!r:.50} for {name}"
            raise _malformed(server_url, "get_file_info_map", what)
        checked[name] = {"size": int(size), "sha1sum": sha1sum}
    return checked


class Sha1Sink:
    """A download sink that only hashes: the partial file holds the bytes, this their SHA-1."""

    def __init__(self) -> None:
        self.sha1 = hashlib.sha1()

    def write(self, chunk: bytes) -> None:
        self.sha1.update(chunk)

    def reset(self) -> None:
        self.sha1 = hashlib.sha1()


def fetch_checked(url: str, final: Path, size: int, sha1sum: str, crds_path: Path, policy: RetryPolicy | None = None,
                  log: TextIO | None = None, shown: bool = False) -> Path:  # fmt: skip
    """Download ``url`` to ``final``: resumable, and renamed into place only once its size and SHA-1 match.

    A file already at ``final`` is done (it took that name only after its checks).
    With ``shown`` the download is on the run's live display, as a reference file's is.
    On a SHA-1 mismatch the bytes are deleted and :class:`VerifyError` raised.
    """
    final = writable(crds_path, final, Lane())
    with exclusive(layout.lock_path(crds_path, final.name), final.name, log):
        if final.is_file():
            return final
        partial = writable(crds_path, layout.partial_download_path(crds_path, final.name, ""), BOOKKEEPING)
        sink = Sha1Sink()

        def reserve(remaining: int) -> None:
            require_free_space(partial, remaining, final.name)

        progress = Progress(final.name, stream=log) if shown else None
        download(url, partial, sink, expected=Expected(size=size), policy=policy, reserve=reserve, log=log,
                 progress=progress)  # fmt: skip
        if sink.sha1.hexdigest() != sha1sum.lower():
            remove_partial(partial)
            raise VerifyError(f"{url}: sha1 check failed: got {sink.sha1.hexdigest()}, the CRDS server says "
                              f"{sha1sum}; the bad bytes were discarded")  # fmt: skip
        final.parent.mkdir(parents=True, exist_ok=True)
        take_final_names([(partial, final)])
    return final


@dataclass
class ReferenceRequest:
    """One reference file to fetch, as a build job asks for it: what :func:`fetch_reference` does."""

    mirage_data: Path  # the tree it goes to: the cache (the row's root), named as every request's tree is
    reference_url: str  # where the server serves references
    file_id: str  # the reference's name
    instrument: str  # its folder in the cache
    size: int  # as the server says
    sha1sum: str  # as the server says
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    archive: str = ""  # kept as it is: names its partial download


def request(row, reference_url: str, policy: RetryPolicy | None = None) -> ReferenceRequest:
    """The request that fetches ``row`` (of :func:`as_rows`) from ``reference_url``."""
    return ReferenceRequest(Path(row.root), reference_url, row.file_id, row.instrument, int(row.size_bytes), row.sha1,
                            policy or RetryPolicy())  # fmt: skip


def fetch_reference(request: ReferenceRequest, log: TextIO | None = None) -> Path:
    """Fetch one reference file into the cache, checked; once more from the start if its bytes were wrong."""
    final = reference_path(request.mirage_data, request.instrument, request.file_id)
    url = request.reference_url + request.file_id

    def once() -> Path:
        return fetch_checked(url, final, request.size, request.sha1sum, request.mirage_data, request.policy, log,
                             shown=True)  # fmt: skip

    return twice_on_bad_bytes(once, request.file_id, log)


# --- The cache's mappings and config files ----------------------------------------------


def server_config(context: str) -> str:
    """The smallest ``config/jwst/server_config`` with which crds resolves from the cache alone."""
    config = {
        "observatory": OBSERVATORY,
        "latest_context": context,
        "operational_context": context,
        "last_synced": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "force_remote_mode": False,
        "bad_files_list": [],
    }
    return repr(config) + "\n"


def fill_mappings(crds_path: Path, server_url: str, context: str, policy: RetryPolicy | None = None,
                  log: TextIO | None = None) -> list[str]:  # fmt: skip
    """Fetch every mapping of ``context`` (checked) and write the cache's config files; returns their names."""
    try:
        names = rpc(server_url, "get_mapping_names", context, expect=list)
    except UsageError:
        names = []
    if not all(isinstance(name, str) for name in names):
        raise _malformed(server_url, "get_mapping_names", "names that are not all strings")
    if not names or context not in names:
        raise UsageError(f"the CRDS server {server_url} has no context {context!r}; pick one it has"
                         " (https://jwst-crds.stsci.edu lists them) as crds_context")  # fmt: skip
    _require_plain_names(server_url, "get_mapping_names", names)
    info = file_info(server_url, names)
    mapping_url = server_folder(server_url, "mapping_url")
    folder = Path(crds_path) / "mappings" / OBSERVATORY

    def fetch_one(name: str) -> Path:
        return fetch_checked(mapping_url + name, folder / name, info[name]["size"], info[name]["sha1sum"],
                             crds_path, policy, log)  # fmt: skip

    with ThreadPoolExecutor(MAPPING_DOWNLOADS) as pool:
        list(pool.map(fetch_one, names))
    config = Path(crds_path) / "config" / OBSERVATORY
    write_atomically(writable(crds_path, config / "ref_cache_subdir_mode", Lane()), "instrument\n")
    write_atomically(writable(crds_path, config / "server_config", Lane()), server_config(context))
    return names


def _require_plain_names(server_url: str, method: str, names: list) -> None:
    """Refuse an answer naming a file by anything but a plain file name: a name from a server is never a path."""
    if bad := [name for name in names if not (isinstance(name, str) and is_plain_name(name))]:
        raise UsageError(
            f"the CRDS server {server_url} answered {method} with {bad[0]!r}, which is not a file name"
            " (letters, digits, '_', '.', '-'); nothing was written: check crds_server_url"
        )


# --- Best references, computed by crds with no server ----------------------------------


def offline_environment(crds_path: Path, context: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment) without any CRDS_ setting, plus those of a serverless cache."""
    environment = {key: value for key, value in (base or os.environ).items() if not key.startswith("CRDS_")}
    return {
        **environment,
        "CRDS_PATH": str(crds_path),
        "CRDS_SERVER_URL": SERVERLESS_URL,
        "CRDS_CONTEXT": context,
        "CRDS_MODE": "local",
        "CRDS_READONLY_CACHE": "1",
    }


def best_references(crds_path: Path, context: str, modes: list[dict[str, str]], types: Iterable[str]) -> list[dict]:
    """For each mode, ``{type: reference name or "NOT FOUND ..."}`` as crds computes it from the cache alone.

    crds runs in a child process: ``import crds`` writes its defaults into
    ``os.environ`` and keeps module-level state, which must not reach this one.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    environment = offline_environment(crds_path, context)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    question = json.dumps({"context": context, "modes": modes, "types": list(types)})
    done = subprocess.run([sys.executable, "-m", "mirage_reffiles.sources.crds"], input=question, env=environment,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        if "No module named 'crds'" in done.stderr:
            last = "the crds package is not installed: pip install 'mirage-reffiles[crds]'"
        raise UsageError(f"crds could not compute best references for {context}: {last}")
    return json.loads(done.stdout)


def _answer_best_references() -> None:
    """The child process of :func:`best_references`: a question on stdin, the answer on stdout."""
    import crds  # the crds extra; imported here only, in a process of its own

    question = json.load(sys.stdin)
    today = datetime.date.today().isoformat()
    answers = []
    for mode in question["modes"]:
        parameters = {"DATE-OBS": today, "TIME-OBS": "00:00:00", **mode}
        found = crds.getrecommendations(parameters, reftypes=question["types"], context=question["context"],
                                        observatory=OBSERVATORY)  # fmt: skip
        answers.append({kind: str(found.get(kind, "NOT FOUND (no answer)")) for kind in question["types"]})
    json.dump(answers, sys.stdout)


# --- The plan: which reference files, where, how large ----------------------------------


@dataclass(frozen=True)
class Reference:
    """One reference file of the plan: its name, instrument folder, and the server's size and SHA-1."""

    name: str
    instrument: str
    size: int
    sha1sum: str


def is_filled(crds_path: Path, context: str) -> bool:
    """Whether the cache holds ``context`` and its config files (a plan for it was made)."""
    if not context:
        return False
    config = Path(crds_path) / "config" / OBSERVATORY / "server_config"
    return config.is_file() and (Path(crds_path) / "mappings" / OBSERVATORY / context).is_file()


def plan_key(context: str, modes: list[dict[str, str]], types: Iterable[str]) -> str:
    """Names the plan of these choices: another context, mode or type is another plan."""
    text = json.dumps({"context": context, "modes": modes, "types": sorted(types)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_path(crds_path: Path, context: str, modes: list[dict[str, str]], types: Iterable[str]) -> Path:
    return state_dir(crds_path) / "plans" / f"{context}.{plan_key(context, modes, types)}.json"


def read_plan(path: Path) -> tuple[str, list[Reference]] | None:
    """``(reference_url, references)`` of a plan written earlier; None when there is none."""
    try:
        plan = json.loads(path.read_text())
        return plan["reference_url"], [Reference(**item) for item in plan["references"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def make_plan(crds_path: Path, server_url: str, context: str, modes: list[dict[str, str]], types: list[str],
              policy: RetryPolicy | None = None, log: TextIO | None = None) -> tuple[str, list[Reference]]:  # fmt: skip
    """The reference files these modes need, with a cache that resolves them offline.

    Made once per (context, modes, types) and written last, under
    :func:`plan_path`: a second call reads it and asks the server nothing.
    Raises :class:`UsageError` (before any reference is downloaded) for a
    context the server does not have and for a mode and type crds has no
    reference for.
    """
    path = plan_path(crds_path, context, modes, types)
    if (plan := read_plan(path)) is not None:
        return plan
    fill_mappings(crds_path, server_url, context, policy, log)
    answers = best_references(crds_path, context, modes, types)
    _refuse_differences(server_url, context, modes, types, answers)
    reference_url, references = _references(server_url, context, modes, answers)
    plan = {"context": context, "reference_url": reference_url, "modes": modes, "types": list(types),
            "references": [vars(reference) for reference in references]}  # fmt: skip
    write_atomically(writable(crds_path, path, BOOKKEEPING), json.dumps(plan, indent=1))
    return reference_url, references


def _references(server_url: str, context: str, modes: list[dict[str, str]], answers: list[dict]):
    """``(reference_url, references)`` for the answers of each mode; :class:`UsageError` for a pair with none."""
    missing = [f"{describe(mode)}: {kind}: {name}" for mode, found in zip(modes, answers, strict=True)
               for kind, name in found.items() if name.upper().startswith(("NOT FOUND", "N/A"))]  # fmt: skip
    if missing:
        listed = "\n  ".join(missing[:10])
        raise UsageError(
            f"CRDS context {context} has no reference for {len(missing)} mode and type pairs:\n  {listed}\n"
            "remove those modes or types from crds_modes and crds_types, or pick another context"
        )
    instruments = {}
    for mode, found in zip(modes, answers, strict=True):
        for name in found.values():
            instruments[name] = mode["INSTRUME"].lower()
    _require_plain_names(server_url, "best references", list(instruments))
    info = file_info(server_url, sorted(instruments))
    references = [Reference(name, instruments[name], info[name]["size"], info[name]["sha1sum"])
                  for name in sorted(instruments)]  # fmt: skip
    reference_url = server_folder(server_url, "reference_url")
    return reference_url, references


def server_best_references(server_url: str, context: str, modes: list[dict[str, str]], types: Iterable[str]):
    """For each mode, ``{type: reference name}`` as the server answers ``get_best_references``."""
    today = datetime.date.today().isoformat()
    answers = []
    for mode in modes:
        header = {"DATE-OBS": today, "TIME-OBS": "00:00:00", **mode}
        found = rpc(server_url, "get_best_references", context, header, list(types), expect=dict)
        answers.append({kind: str(found.get(kind, "NOT FOUND (no answer)")) for kind in types})
    return answers


def plan_from_server(server_url: str, context: str, modes: list[dict[str, str]], types: Iterable[str]):
    """``(reference_url, references)`` as the server says, writing nothing: what a dry run shows.

    A real run computes the choice itself (:func:`make_plan`) and refuses one that differs.
    """
    types = list(types)
    return _references(server_url, context, modes, server_best_references(server_url, context, modes, types))


def _refuse_differences(server_url, context, modes, types, answers) -> None:
    """Refuse a local choice that differs from the server's (a dry run showed the server's)."""
    theirs = server_best_references(server_url, context, modes, types)
    differ = [f"{describe(mode)}: {kind}: {mine[kind]} here, {other.get(kind)} on the server"
              for mode, mine, other in zip(modes, answers, theirs, strict=True)
              for kind in mine if mine[kind] != other.get(kind)]  # fmt: skip
    if differ:
        listed = "\n  ".join(differ[:10])
        raise UsageError(
            f"crds chose other references for {context} than the CRDS server {server_url} does:\n  {listed}\n"
            "the cache's mappings or the crds package differ from the server's; update crds, or pick the context"
            " the server uses"
        )


#: The ``kind`` of a CRDS reference's row.
REFERENCE_KIND = "crds_reference"


def as_rows(crds_path: Path, reference_url: str, references: list[Reference]):
    """A plan's references in the one shape of every source (see :mod:`.rows`): each kept as it is,
    at the path crds reads it from, pinned by the server's size and SHA-1."""
    return rows.frame(
        {
            "file_id": ref.name,
            "source": "crds",
            "root": str(crds_path),
            "urls": reference_url + ref.name,
            "path": ref.name,
            "archive": "",
            "destination": (destination := reference_path(Path(), ref.instrument, ref.name).as_posix()),
            "lane": destination,
            "size_bytes": str(ref.size),
            "size_exact": "true",
            "unpacked_bytes": str(ref.size),
            "unpacked_exact": "true",
            "sha1": ref.sha1sum.lower(),
            "instrument": ref.instrument,
            "kind": REFERENCE_KIND,
        }
        for ref in references
    )


if __name__ == "__main__":
    _answer_best_references()
