"""Mirage's JWST reference files as a resumable, verified, parallel Snakemake build.

The download jobs import submodules of this package under ``python -S``, so
importing the package itself stays free of anything beyond the standard
library; ``download_reffiles`` is loaded on first use.
"""


def __getattr__(name):
    if name == "download_reffiles":
        from .api import download_reffiles

        return download_reffiles
    raise AttributeError(f"module 'mirage_reffiles' has no attribute {name!r}")
