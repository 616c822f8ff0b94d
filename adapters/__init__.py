"""Adapters: one module per outside thing (store, Socket.IO, QR images, engines, HTTP)."""
