"""Webhooks: Standard Webhooks messages to the URLs identities subscribed."""
