"""``python -m moero``: see :mod:`moero.cli`."""

from moero.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
