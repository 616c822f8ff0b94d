"""QR codes as PNG data URIs."""
