"""What the domain tests expect, written out independently of domain/model/session.py."""

# The event each aggregate command records.
EVENT_OF = {
    "issue_qr": "QrIssued",
    "authenticate": "Authenticated",
    "mark_ready": "Ready",
    "disconnect": "Disconnected",
    "restart": "Restarted",
}
