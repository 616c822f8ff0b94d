"""WhatsApp engines behind the domain's WhatsAppEngine port."""
