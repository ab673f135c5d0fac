"""The `registry` command line: a thin layer over the registry package."""
