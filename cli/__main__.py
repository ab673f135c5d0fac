"""`python -m cli` runs the `registry` command."""

from open_registry.cli.main import main

main()
