"""The search operators every list and search route understands."""

OPERATORS = (
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "in",
    "contains",
    "notContains",
    "startsWith",
    "endsWith",
)
