"""What an upstream's response headers ask of us."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["retry_after_seconds"]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait an upstream asked for: ``retry-after-ms`` (preferred, as the SDKs
    do) or ``retry-after`` in seconds; ``None`` if absent or an HTTP date."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue  # an HTTP date: rare from APIs, not worth parsing here
            if seconds >= 0 and seconds == seconds:  # not NaN
                return seconds
    return None
