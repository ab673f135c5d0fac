"""The pages people use: generated lists and forms, sign-in, the schema editor's pages."""
