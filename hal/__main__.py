"""``python -m hal``: the same CLI as the ``hal`` console script."""

from hal.cli import main

raise SystemExit(main())
