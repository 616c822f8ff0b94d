"""The HTTP side: the sessions API, health and readiness, the Scan page, guards."""
