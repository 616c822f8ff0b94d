"""The application layer: use cases (client requests, engine reports), the registry of what
this process runs, recovery and shutdown, and the ports they need."""
