"""``python -m mirage_reffiles.server``: see :mod:`mirage_reffiles.testing.server`."""

from mirage_reffiles.testing.server import main

if __name__ == "__main__":
    main()
