"""Work that follows a write: the outbox worker, deliveries to the outside, their admin API."""
