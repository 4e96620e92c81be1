"""One module a CLI command; each defines ``add_parser(subparsers)`` and a ``run(args)``."""
