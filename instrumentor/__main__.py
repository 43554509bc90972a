"""``python -m instrumentor``: the same as the ``instrumentor`` console script."""

from instrumentor.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
