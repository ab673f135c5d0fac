"""`python -m cli` runs the `registry` command."""

from cli.main import main

main()
