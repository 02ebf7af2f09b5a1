"""``[plugin.guard]``: the abuse guard's options, validated like every sluiceway table."""

from __future__ import annotations

import ipaddress
import math
from typing import Annotated, Literal

import msgspec

from sluiceway.api import Duration, check_storage_url

__all__ = ["GuardOptions"]


_DURATIONS = ("failed_auth_window", "ban_for", "burst_window", "block_for")


class GuardOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.guard]``.

    In code (a guard around your own app), durations may be given as
    ``Duration(60)``, a number of seconds, or a string such as ``"5m"``.
    """

    # IP bans: this many failed authentications within failed_auth_window ban
    # the client's address for ban_for. 0 turns IP bans off.
    max_failed_auth: Annotated[int, msgspec.Meta(ge=0)] = 10
    failed_auth_window: Duration = Duration(300)
    ban_for: Duration = Duration(900)
    # Key bursts: more than burst_rps x burst_window requests of one key within
    # burst_window block the key for block_for. 0 turns burst blocks off.
    burst_rps: Annotated[float, msgspec.Meta(ge=0)] = 50.0
    burst_window: Duration = Duration(1)
    block_for: Duration = Duration(300)
    # Peers whose X-Forwarded-For is believed: IPs or CIDR networks.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    # IPv6 clients are banned by network of this prefix length (128: per address).
    ipv6_prefix: Annotated[int, msgspec.Meta(ge=1, le=128)] = 64
    # "memory://" (this process) or a Redis URL (shared between processes).
    storage: str = "memory://"
    key_prefix: str = "sluiceway:guard:"
    # Redis unreachable: "open" falls back to in-memory bans, "closed" answers 503.
    on_storage_error: Literal["open", "closed"] = "open"
    # In memory: at most this many addresses and keys tracked per table.
    max_entries: Annotated[int, msgspec.Meta(ge=1)] = 100_000

    def __post_init__(self) -> None:
        for name in _DURATIONS:
            value = Duration.parse(getattr(self, name))  # also accepts "5m" given in code
            if not value > 0:
                raise ValueError(f"{name} must be longer than 0s")
            setattr(self, name, value)
        if self.burst_rps and self.burst_limit < 1:
            raise ValueError(
                "burst_rps x burst_window must allow at least one request"
                f" (found {self.burst_rps:g} x {float(self.burst_window):g}s)"
            )
        for index, entry in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies[{index}]: {entry!r} is not an IP address or network"
                ) from None
        check_storage_url(self.storage)

    @property
    def burst_limit(self) -> int:
        """The requests one key may send within ``burst_window`` (0: no limit)."""
        return math.floor(self.burst_rps * self.burst_window + 1e-9)

    @property
    def bans(self) -> bool:
        return self.max_failed_auth > 0

    @property
    def bursts(self) -> bool:
        return self.burst_limit > 0
