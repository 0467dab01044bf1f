"""mirage-reffiles: Mirage's download_reffiles() from the command line.

mirage-reffiles /data/mirage --instrument nircam,niriss --dark-type both --single-dark
"""

from __future__ import annotations

import argparse

from mirage_reffiles.sources.mirage import DARK_TYPES, TableError, parse_instruments


def _instrument(value: str) -> str:
    try:
        parse_instruments(value)
    except TableError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mirage-reffiles")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage-reffiles",
        description="Download Mirage's reference files into DIRECTORY/mirage_data (MIRAGE_DATA), "
        "as Mirage's downloader.download_reffiles() does: in parallel, resumable, verified, and "
        "never fetching a file that is already there.",
    )
    p.add_argument("directory", help="download folder; MIRAGE_DATA becomes DIRECTORY/mirage_data")
    p.add_argument(
        "--instrument",
        type=_instrument,
        default="all",
        help="'all', one of nircam, niriss, fgs, or a comma-separated list (default: %(default)s)",
    )
    p.add_argument(
        "--dark-type", choices=list(DARK_TYPES), default="linearized", help="darks to fetch (default: %(default)s)"
    )
    p.add_argument("--skip-darks", action="store_true", help="leave out the dark current files")
    p.add_argument(
        "--single-dark",
        action="store_true",
        help="one dark per NIRCam detector, one for NIRISS and one per FGS guider",
    )
    p.add_argument("--skip-cosmic-rays", action="store_true", help="leave out the cosmic ray libraries")
    p.add_argument("--skip-psfs", action="store_true", help="leave out the PSF libraries (and NIRCam PSF wings)")
    p.add_argument("--skip-soss", action="store_true", help="leave out the NIRISS SOSS PSFs")
    p.add_argument(
        "--webbpsf", action="store_true", help="also fetch WebbPSF's data (MIRAGE_DATA/webbpsf-data, WEBBPSF_PATH)"
    )
    p.add_argument(
        "--vega",
        action="store_true",
        help="also put the Vega spectrum into an astropy cache (MIRAGE_DATA/astropy-cache, ASTROPY_CACHE_DIR)",
    )
    p.add_argument("--cores", type=int, default=8, help="jobs at once (default: %(default)s)")
    p.add_argument(
        "--base-url",
        help="where the files are served: https://, file:// or a folder "
        "(default: $MIRAGE_REFFILES_BASE_URL if set, else STScI's server)",
    )
    p.add_argument("--dry-run", "-n", action="store_true", help="show what would be fetched, with sizes; fetch nothing")
    p.add_argument(
        "--keep-archives", action="store_true", help="keep the downloaded .gz/.tar.gz under MIRAGE_DATA/archives/"
    )
    p.add_argument(
        "--ignore-free-space", action="store_true", help="start even when the build does not fit in the free space"
    )
    p.add_argument("--retries", type=int, help="tries after the first for a transient fault (default: 5)")
    p.add_argument("--verbose", action="store_true", help="show Snakemake's messages in full (a block per job)")
    p.add_argument(
        "--config",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any setting of config/config.yaml, e.g. --config read_timeout=120 (repeat for more)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument(
        "--remove-mirage-archives",
        action="store_true",
        help="delete the .gz/.tar.gz copies that Mirage's own downloader left in DIRECTORY",
    )
    return p


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    from mirage_reffiles.api import download_reffiles
    from mirage_reffiles.errors import ServerUnreachable, SpaceError, UsageError

    config = dict(args.config)
    for key in ("keep_archives", "ignore_free_space", "verbose"):
        if getattr(args, key):
            config[key] = True
    if args.retries is not None:
        config["retries"] = args.retries
    try:
        download_reffiles(
            args.directory,
            instrument=args.instrument,
            dark_type=args.dark_type,
            skip_darks=args.skip_darks,
            single_dark=args.single_dark,
            skip_cosmic_rays=args.skip_cosmic_rays,
            skip_psfs=args.skip_psfs,
            skip_soss=args.skip_soss,
            cores=args.cores,
            base_url=args.base_url,
            dry_run=args.dry_run,
            remove_mirage_archives=args.remove_mirage_archives,
            webbpsf=args.webbpsf,
            vega=args.vega,
            config=config,
        )
    except UsageError as error:
        parser().exit(2, f"mirage-reffiles: error: {error}\n")
    except SpaceError as error:
        parser().exit(1, f"mirage-reffiles: {error} (here: --ignore-free-space)\n")
    except ServerUnreachable as error:
        parser().exit(1, f"mirage-reffiles: {error}\n")
    except KeyboardInterrupt as stop:
        parser().exit(130, f"mirage-reffiles: {stop}\n")
    except Exception as error:  # snakemake's WorkflowError: the failed files were named above
        if type(error).__name__ != "WorkflowError":
            raise
        parser().exit(
            1,
            f"mirage-reffiles: some files could not be fetched (named above; their logs are under "
            f"{args.directory}/mirage_data/.reffiles/logs/). What was fetched is kept: run the same "
            "command again to retry the rest.\n",
        )


if __name__ == "__main__":
    main()
