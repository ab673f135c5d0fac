"""The tamper-evident audit log: the hash chain, its verification and its API."""
