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
    "icontains",
    "notContains",
    "startsWith",
    "endsWith",
)
