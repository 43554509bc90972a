"""``python -m instrumentor``: the same as the ``instrumentor`` console script."""

from instrumentor.cli import main

raise SystemExit(main())
