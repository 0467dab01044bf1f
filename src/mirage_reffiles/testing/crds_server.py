"""A stand-in CRDS server on 127.0.0.1: a synthetic JWST context and its reference files.

It answers the JSON-RPC calls the real ``crds`` client (filling its own cache) and this build make
(``POST /json/<method>/<id>/``) and serves mappings and references under
``unchecked_get/{mappings,references}/jwst/`` as the real server does, with
Range requests, a request log and faults (it is a :class:`.MirrorServer`);
:attr:`CrdsServer.answers` makes it answer a method with any result or body.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mirage_reffiles.testing.server import MirrorServer, Request, _Handler, running, serve_until_stopped

#: Mirage's reference types (mirage/utils/constants.py: CRDS_FILE_TYPES).
MIRAGE_TYPES = ("mask", "distortion", "gain", "ipc", "linearity", "area", "saturation", "superbias", "flat", "photom")
MAPPING_DIR = "unchecked_get/mappings/jwst"
REFERENCE_DIR = "unchecked_get/references/jwst"
#: Types whose synthetic rmaps select on the filter as well as the detector.
FILTER_TYPES = frozenset({"flat", "photom"})
FITS_BLOCK = 2880


@dataclass(frozen=True)
class Mode:
    """One observing mode the synthetic context has references for."""

    instrument: str  # lower case, as in CRDS file names
    detector: str
    filter: str


#: The modes the synthetic context covers: those of config/crds_modes.csv.
MODES = (
    Mode("nircam", "NRCA1", "F150W"),
    Mode("nircam", "NRCALONG", "F444W"),
    Mode("niriss", "NIS", "CLEAR"),
    Mode("fgs", "GUIDER1", "N/A"),
)


def _literal(value) -> str:
    return repr(value)


def mapping_text(header: dict, selector: str) -> str:
    """A CRDS mapping file: ``header`` (with its ``sha1sum``) and ``selector`` text.

    The checksum is the SHA-1 of the text with every line that mentions it left out.
    """
    lines = ["header = {"] + [f"    {key!r} : {_literal(header[key])}," for key in sorted(header)] + ["}", ""]
    body = "\n".join(lines) + "\nselector = " + selector + "\n"
    sha1 = hashlib.sha1(body.encode()).hexdigest()
    return body.replace("header = {\n", f"header = {{\n    'sha1sum' : {sha1!r},\n", 1)


def _reference_bytes(name: str, size: int) -> bytes:
    """A FITS-looking file of ``size`` bytes whose content depends on ``name``."""
    card = f"{'SIMPLE':<8}= {'T':>20}".ljust(80) + f"{'FILENAME':<8}= {name!r:>20}".ljust(80) + "END".ljust(80)
    head = card.encode().ljust(FITS_BLOCK, b" ")
    seed = hashlib.sha256(name.encode()).digest()
    data = (seed * (size // len(seed) + 1))[: max(0, size - len(head))]
    return head + data


def write_context(root: Path, context: str = "jwst_0001.pmap", reference_size: int = 64 * 1024) -> dict[str, str]:
    """Write a synthetic context (mappings and references) under ``root`` as the server lays it out.

    Returns ``{reference name: instrument}``.
    """
    serial = context.split("_")[-1].split(".")[0]
    mappings, references = root / MAPPING_DIR, root / REFERENCE_DIR
    mappings.mkdir(parents=True, exist_ok=True)
    references.mkdir(parents=True, exist_ok=True)
    instruments = sorted({mode.instrument for mode in MODES})
    made: dict[str, str] = {}
    imaps = {}
    for instrument in instruments:
        modes = [mode for mode in MODES if mode.instrument == instrument]
        rmaps = {}
        for kind in MIRAGE_TYPES:
            rmap = f"jwst_{instrument}_{kind}_{serial}.rmap"
            rmaps[kind] = rmap
            by_filter = kind in FILTER_TYPES and instrument != "fgs"  # FGS has no filter
            parkey = (("META.INSTRUMENT.DETECTOR", "META.INSTRUMENT.FILTER") if by_filter else
                      ("META.INSTRUMENT.DETECTOR",), ("META.OBSERVATION.DATE", "META.OBSERVATION.TIME"))  # fmt: skip
            rules = []
            for number, mode in enumerate(modes, start=1):
                reference = reference_name(context, instrument, kind, number)
                made[reference] = instrument
                (references / reference).write_bytes(_reference_bytes(reference, reference_size))
                key = (mode.detector, mode.filter) if by_filter else (mode.detector,)
                rules.append(f"    {key!r} : UseAfter({{\n        '2014-01-01 00:00:00' : {reference!r},\n    }}),\n")
            header = {
                "derived_from": "generated",
                "filekind": kind.upper(),
                "instrument": instrument.upper(),
                "mapping": "REFERENCE",
                "name": rmap,
                "observatory": "JWST",
                "parkey": parkey,
            }
            (mappings / rmap).write_text(mapping_text(header, "Match({\n" + "".join(rules) + "})"))
        imap = f"jwst_{instrument}_{serial}.imap"
        imaps[instrument.upper()] = imap
        header = {
            "derived_from": "generated",
            "instrument": instrument.upper(),
            "mapping": "INSTRUMENT",
            "name": imap,
            "observatory": "JWST",
            "parkey": ("REFTYPE",),
        }
        (mappings / imap).write_text(mapping_text(header, repr(rmaps)))
    header = {
        "derived_from": "generated",
        "mapping": "PIPELINE",
        "name": context,
        "observatory": "JWST",
        "parkey": ("META.INSTRUMENT.NAME",),
    }
    (mappings / context).write_text(mapping_text(header, repr(imaps)))
    return made


def reference_name(context: str, instrument: str, kind: str, number: int) -> str:
    """The name :func:`write_context` gives the reference of ``kind`` for the ``number``-th mode of ``instrument``."""
    serial = context.split("_")[-1].split(".")[0]
    extension = "asdf" if kind == "distortion" else "fits"  # as CRDS names them
    return f"jwst_{instrument}_{kind}_{int(serial) * 100 + number:04d}.{extension}"


def best_reference(context: str, header: dict, kind: str) -> str:
    """What the synthetic context's rules choose for ``header``: as crds computes from its mappings."""
    instrument = str(header.get("INSTRUME", "")).lower()
    modes = [mode for mode in MODES if mode.instrument == instrument]
    by_filter = kind in FILTER_TYPES and instrument != "fgs"
    for number, mode in enumerate(modes, start=1):
        if header.get("DETECTOR") == mode.detector and (not by_filter or header.get("FILTER") == mode.filter):
            return reference_name(context, instrument, kind, number)
    return "NOT FOUND n/a"


def _mapping_names(root: Path, context: str) -> list[str]:
    """Every mapping of ``context``, itself included, followed through the names each one holds."""
    names: set[str] = set()
    todo = [context]
    while todo:
        name = todo.pop()
        if name not in names:
            names.add(name)
            todo += re.findall(r"'([\w.-]+\.[ir]map)'", (root / MAPPING_DIR / name).read_text())
    return sorted(names)


class CrdsServer(MirrorServer):
    """A :class:`.MirrorServer` over a synthetic CRDS tree that also answers CRDS's JSON-RPC calls."""

    def __init__(self, root: Path, context: str = "jwst_0001.pmap", **options):
        super().__init__(root, **options)
        self.RequestHandlerClass = _CrdsHandler
        self.context = context
        self.calls: list[str] = []
        # A method's answer in place of the real one, a hostile server's: its result, or bytes sent as the whole body.
        self.answers: dict[str, object] = {}

    def rpc_posts(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]

    def all_files(self) -> list[str]:
        """Every mapping and reference the server has."""
        return sorted(path.name for folder in (MAPPING_DIR, REFERENCE_DIR) for path in (self.root / folder).iterdir())

    def file_info(self, name: str) -> dict | None:
        folder = MAPPING_DIR if name.endswith("map") else REFERENCE_DIR
        path = self.root / folder / name
        if not path.is_file():
            return None
        data = path.read_bytes()
        return {"size": str(len(data)), "sha1sum": hashlib.sha1(data).hexdigest()}

    def call(self, method: str, params: list):
        """The result of one JSON-RPC call; raises LookupError with the server's message."""
        if method in self.answers:
            return self.answers[method]
        if method == "get_server_info":
            return {
                "observatory": "jwst",
                "operational_context": self.context,
                "edit_context": self.context,
                "mapping_url": {"jwst": f"{self.url}{MAPPING_DIR}/"},
                "reference_url": {"jwst": f"{self.url}{REFERENCE_DIR}/"},
                "crds_version": {"str": "stand-in"},
                "checked_context": self.context,
                "force_remote_mode": False,
                "last_synced": "2026-11-25 00:00:00",
                "bad_files": "",
                "bad_files_list": [],
                "download_metadata": {name: self.file_info(name) for name in self.all_files()},
            }
        if method in ("get_build_context", "get_default_context"):
            return self.context
        if method == "get_mapping_names":
            context = params[0]
            if not (self.root / MAPPING_DIR / str(context)).is_file():
                raise LookupError(f"Unknown context {context!r}")
            return _mapping_names(self.root, context)
        if method == "get_best_references":
            context, header, kinds = params[0], params[1], params[2]
            if not (self.root / MAPPING_DIR / str(context)).is_file():
                raise LookupError(f"Unknown context {context!r}")
            return {kind: best_reference(context, header, kind) for kind in kinds}
        if method == "get_file_info_map":
            names = params[1] if len(params) > 1 and params[1] is not None else self.all_files()
            fields = params[2] if len(params) > 2 and params[2] else ["size", "sha1sum"]
            infos = {name: self.file_info(name) for name in names}
            return {
                name: ({key: info[key] for key in fields if key in info} if info else "NOT FOUND")
                for name, info in infos.items()
            }
        raise LookupError(f"unknown method {method!r}")


class _CrdsHandler(_Handler):
    server: CrdsServer

    def do_POST(self):
        path = unquote(urlsplit(self.path).path).strip("/")
        request = Request("POST", path, None)
        self.server.log_request(request)
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            method = body.get("method") or path.split("/")[1]
            result = self.server.call(method, body.get("params") or [])
            answer = {"result": result, "error": None, "id": body.get("id")}
        except (LookupError, ValueError, IndexError, TypeError) as error:
            answer = {"result": None, "error": {"message": str(error)}, "id": None}
        request.status = HTTPStatus.OK
        text = answer["result"] if isinstance(answer["result"], bytes) else json.dumps(answer).encode()
        self._answer(HTTPStatus.OK, {"Content-Type": "application/json"}, text)
        self.close_connection = True


def serve_crds(root: Path, context: str = "jwst_0001.pmap", **options):
    """Serve the synthetic CRDS tree at ``root`` on 127.0.0.1 for the duration of the block."""
    return running(CrdsServer(root, context=context, **options))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mirage_reffiles.testing.crds_server",
        description="Write a synthetic CRDS context into FOLDER (unless it holds one) and serve it on 127.0.0.1 as "
        "a stand-in CRDS server: point crds_server_url (or $MIRAGE_REFFILES_CRDS_URL) at the address it prints.",
    )
    parser.add_argument("folder", type=Path, help="where the synthetic context is written and served from")
    parser.add_argument("--context", default="jwst_0001.pmap", help="the context's name (default jwst_0001.pmap)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)
    if not (args.folder / MAPPING_DIR / args.context).is_file():
        write_context(args.folder, args.context)
    serve_until_stopped(
        CrdsServer(args.folder, context=args.context, port=args.port), f"Serving CRDS context {args.context}"
    )


if __name__ == "__main__":
    main()
