"""Session encryption: Fernet keys, where they come from, and the sealed envelope.

Keys come, in order, from ``[sessions] key`` (an ``env:`` reference), from
``$SLUICEWAY_SESSION_KEY``, or from a key file created with mode 0600 on first
use. Several keys may be given (comma-separated, or one per line in the file):
the first encrypts, all decrypt (:class:`cryptography.fernet.MultiFernet`), which
is how ``sluiceway sessions rotate-key`` re-encrypts without losing a session.

A sealed session is a small JSON envelope: the format, the provider, the id of
the key that sealed it and the Fernet token. The key id is there because Fernet
cannot tell a wrong key from a damaged token (both are ``InvalidToken``); with
it, the log says which one happened, and a process whose key file was rotated
under it re-reads the file instead of giving up.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..config.settings import SESSION_KEY_ENV, SessionSettings
from .record import Session

__all__ = [
    "FORMAT",
    "KeyRing",
    "UnreadableSession",
    "create_key_file",
    "key_file_path",
    "key_id",
    "read_key_file",
    "write_key_file",
]

log = logging.getLogger("sluiceway.sessions")

FORMAT = "sluiceway-session/1"


class UnreadableSession(Exception):
    """A stored session that cannot be used: ``reason`` is ``corrupt``,
    ``wrong_key`` or ``mismatch`` (sealed for another provider)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    provider: str
    key_id: str
    token: str


_encode = msgspec.json.Encoder().encode
_envelope = msgspec.json.Decoder(_Envelope).decode
_session = msgspec.json.Decoder(Session).decode


def key_id(key: bytes) -> str:
    """A short, non-secret name for a key (a hash prefix of it)."""
    return hashlib.sha256(key).hexdigest()[:12]


def _parse_keys(text: str, where: str) -> list[bytes]:
    keys = [k.strip().encode() for k in text.replace(",", "\n").splitlines() if k.strip()]
    if not keys:
        raise ValueError(f"{where} holds no key")
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            # Never quote the value: it is (part of) a secret.
            raise ValueError(
                f"{where} holds something that is not a Fernet key "
                "(32 url-safe base64-encoded bytes, as Fernet.generate_key() makes)"
            ) from None
    return keys


def read_key_file(path: Path) -> list[bytes]:
    """The keys in a key file, newest first."""
    return _parse_keys(path.read_text(encoding="ascii"), f"key file {path}")


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace the key file atomically (0600, fsynced)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\n".join(keys) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def create_key_file(path: Path) -> list[bytes]:
    """Read the key file, creating it with a fresh key if there is none.

    Two processes starting at once must end with one key: the new file is
    linked into place, which fails if another process got there first, and then
    that one's key is read.
    """
    with contextlib.suppress(FileNotFoundError):
        return read_key_file(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, Fernet.generate_key() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        log.info("created session key file %s (mode 0600)", path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return read_key_file(path)


class KeyRing:
    """The keys in force, and sealing and opening of sessions with them.

    ``source`` says where the keys came from (``env:VAR`` or the key file's
    path), for messages; ``key_file`` is set when they came from a file, which
    :meth:`open` then re-reads once when it meets a key id it does not know.
    """

    def __init__(self, keys: Sequence[bytes], source: str, key_file: Path | None = None) -> None:
        self.source = source
        self.key_file = key_file
        self._set(keys)

    def _set(self, keys: Sequence[bytes]) -> None:
        self.keys = list(keys)
        self.ids = [key_id(k) for k in self.keys]
        self._fernet = MultiFernet([Fernet(k) for k in self.keys])

    @classmethod
    def load(
        cls, settings: SessionSettings, base_dir: str, env: Mapping[str, str] | None = None
    ) -> KeyRing:
        """The keys ``settings`` point at; creates the key file if that is where
        they live and it does not exist yet. Blocking: call it in a thread."""
        env = os.environ if env is None else env
        if settings.key is not None:
            return cls(_parse_keys(settings.key.reveal(), settings.key.source), settings.key.source)
        if env.get(SESSION_KEY_ENV):
            where = f"env:{SESSION_KEY_ENV}"
            return cls(_parse_keys(env[SESSION_KEY_ENV], where), where)
        path = key_file_path(settings, base_dir)
        return cls(create_key_file(path), str(path), key_file=path)

    def seal(self, session: Session) -> bytes:
        """The envelope for ``session``, encrypted with the newest key."""
        token = self._fernet.encrypt(_encode(session)).decode("ascii")
        return _encode(_Envelope(FORMAT, session.provider, self.ids[0], token))

    def open(self, data: bytes, provider: str | None = None) -> Session:
        """The session in an envelope, or :class:`UnreadableSession` saying why not."""
        try:
            envelope = _envelope(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UnreadableSession("corrupt", f"not a session envelope ({exc})") from None
        if envelope.format != FORMAT:
            raise UnreadableSession("corrupt", f"unknown format {envelope.format!r}")
        if envelope.key_id not in self.ids and self.key_file is not None:
            # Another process (`sessions rotate-key`) may have added a key since.
            with contextlib.suppress(OSError, ValueError):
                self._set(read_key_file(self.key_file))
        if envelope.key_id not in self.ids:
            raise UnreadableSession(
                "wrong_key", f"sealed with key {envelope.key_id}, not one of {self.source}"
            )
        try:
            session = _session(self._fernet.decrypt(envelope.token.encode("ascii")))
        except (InvalidToken, UnicodeError, msgspec.DecodeError, msgspec.ValidationError):
            raise UnreadableSession("corrupt", "the token does not decrypt") from None
        if session.provider != envelope.provider or (provider and session.provider != provider):
            raise UnreadableSession("mismatch", f"sealed for provider {session.provider!r}")
        return session

    def rotated(self, new_key: bytes, keep: int = 1) -> KeyRing:
        """A ring that encrypts with ``new_key`` and still opens what the newest
        ``keep`` of the current keys sealed."""
        return KeyRing([new_key, *self.keys[:keep]], self.source, self.key_file)

    def reseal(self, data: bytes) -> bytes:
        """``data`` sealed again with the newest key (``MultiFernet.rotate``)."""
        envelope = _envelope(data)
        token = self._fernet.rotate(envelope.token.encode("ascii")).decode("ascii")
        return _encode(_Envelope(FORMAT, envelope.provider, self.ids[0], token))


def key_file_path(settings: SessionSettings, base_dir: str) -> Path:
    """Where the key file is: ``key_file``, else ``<path>/session.key``, relative
    to the configuration file's directory."""
    base = Path(base_dir)
    if settings.key_file:
        return base / settings.key_file
    return base / settings.path / "session.key"
