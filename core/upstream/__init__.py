"""Reaching providers: ``client`` (the pooled HTTP client, aiohttp or httpx2,
with its error mapping) ``keys`` (weighted API keys with cooldowns) and ``provider_http``
(``HttpUpstream``: what every HTTP provider shares)."""
