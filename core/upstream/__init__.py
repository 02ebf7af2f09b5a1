"""Reaching providers: ``client`` (the pooled HTTP client, aiohttp or httpx2,
with its error mapping) and ``keys`` (weighted API keys with cooldowns)."""
