"""What every engine knows of WhatsApp itself, whichever library (or simulation) speaks
for it."""

# WhatsApp shows six QR codes, the first for 60 s and the others for 20 s each, then stops
# (whatsmeow says nothing when it does: the neonize engine times them itself).
QR_TIMEOUTS = (60.0, 20.0, 20.0, 20.0, 20.0, 20.0)
# A pairing code stays valid for the whole pairing window.
PAIR_CODE_TIMEOUT = sum(QR_TIMEOUTS)


def passkey_timeout(options: dict[str, object]) -> float:
    """Seconds to answer a passkey request: its WebAuthn `timeout` (milliseconds) when it
    gives one, else a minute (browsers' usual default for navigator.credentials.get)."""
    given = options.get("timeout")
    if isinstance(given, int | float) and not isinstance(given, bool) and given > 0:
        return float(given) / 1000
    return 60.0
