"""The Socket.IO side: the gateway, payload models, the projection onto rooms, the server."""
