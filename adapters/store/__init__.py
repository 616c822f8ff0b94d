"""The event store: eventsourcing's configuration, SQLite tuning, PostgreSQL leases."""
