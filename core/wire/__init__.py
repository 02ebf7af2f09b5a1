"""Wire formats spoken at the gateway's edges."""
