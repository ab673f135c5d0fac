"""Pure generators: a parsed entity schema in, an artifact out (tables, validators, OpenAPI, forms).

No I/O, no application state, no web or CLI framework.
"""
