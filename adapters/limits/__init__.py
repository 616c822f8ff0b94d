"""Request rates and allowances: how much each identity (or address) may ask."""
