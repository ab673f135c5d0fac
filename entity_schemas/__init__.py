"""Default entity schemas shipped with the framework (data, no code)."""
