"""``python -m mirage_reffiles.mirror``: see :mod:`mirage_reffiles.testing.mirror`."""

from mirage_reffiles.testing.mirror import main

if __name__ == "__main__":
    main()
