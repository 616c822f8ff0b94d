"""What every engine knows of WhatsApp itself, whichever library (or simulation) speaks
for it."""

# WhatsApp shows six QR codes, the first for 60 s and the others for 20 s each, then stops
# (whatsmeow says nothing when it does: the neonize engine times them itself).
QR_TIMEOUTS = (60.0, 20.0, 20.0, 20.0, 20.0, 20.0)
# A pairing code stays valid for the whole pairing window.
PAIR_CODE_TIMEOUT = sum(QR_TIMEOUTS)
