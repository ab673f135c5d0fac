"""Entity schemas at run time: loading folders, the schema editor, the schema history."""
