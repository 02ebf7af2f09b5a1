"""``[plugin.request-log]``: the request log's options, validated like every sluiceway table."""

from __future__ import annotations

from typing import Annotated

import msgspec

from sluiceway.api import ByteSize, Duration

__all__ = ["RequestLogOptions"]


class RequestLogOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[plugin.request-log]``.

    In code, durations and sizes may also be given as strings (``"30s"``,
    ``"100MB"``) or numbers (seconds, bytes).
    """

    # A request that takes at least this long also gets a WARNING line. 0: never.
    slow_request: Duration = Duration(30)
    # Put the client's address (as the server reported it) in each request line.
    log_client_address: bool = True
    # Write JSON lines to this file (appended to) instead of the logging system.
    # Relative paths are relative to the directory of the configuration file.
    file: str | None = None
    # With `file`: rotate it when it reaches this size (0: never; logrotate works too).
    max_file_size: ByteSize = ByteSize(0)
    # With `max_file_size`: how many rotated files to keep (file.1 ... file.N).
    keep_files: Annotated[int, msgspec.Meta(ge=1)] = 5
    # Lines waiting for the writer thread; beyond this they are dropped and counted.
    max_queue: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    # Requests whose progress (time to first token, retries) is remembered until
    # they end; beyond this the oldest are forgotten. Also forgotten: requests
    # still running after `forget_after`.
    max_tracked: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    forget_after: Duration = Duration(3600)

    def __post_init__(self) -> None:
        self.slow_request = Duration.parse(self.slow_request)
        self.forget_after = Duration.parse(self.forget_after)
        if not self.forget_after > 0:
            raise ValueError("forget_after must be longer than 0s")
        self.max_file_size = ByteSize.parse(self.max_file_size)
        if self.file is not None and not self.file.strip():
            raise ValueError("file must be a path (leave it out to use the logging system)")
