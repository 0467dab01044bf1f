"""Unpacking: zlib driven so it can be saved and resumed (inflate), gunzip as bytes arrive
(gunzip), tarballs extracted safely (tar), and what a file's first bytes say it is (content)."""
