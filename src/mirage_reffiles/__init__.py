"""Mirage's JWST reference files as a resumable, verified, parallel Snakemake build.

Importing the package loads nothing heavy (no Snakemake, no pandas): a
cluster job that only downloads imports just what it uses.
``download_reffiles`` is loaded on first use.
"""


def __getattr__(name):
    if name == "download_reffiles":
        from mirage_reffiles.api import download_reffiles

        return download_reffiles
    if name == "__version__":  # the one version is pyproject.toml's, as installed
        from importlib.metadata import version

        return version("mirage-reffiles")
    raise AttributeError(f"module 'mirage_reffiles' has no attribute {name!r}")
