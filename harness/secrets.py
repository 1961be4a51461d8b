"""Secrets: the storage password is masked in every text qsweep writes or prints, by one function, :func:`mask`.

:func:`mask` replaces the password of every URL in a text (``scheme://user:PASSWORD@host``,
whether or not SQLAlchemy can parse the URL) and every registered secret
(:func:`register`: the password qsweep read from ``storage.password_env`` or
``storage.password_file``, ``PGPASSWORD``) with ``***``. Everything that leaves
the process goes through it:

* log records (console and ``qsweep.log``), by the record factory :func:`install_log_masking`;
* error messages the CLI prints, tracebacks, ``environment.json`` (``argv``), ``config.yaml``,
  ``summary.json`` and what qsweep records in the study;
* the files Hydra writes into the run directory (``.hydra/config.yaml``, ``hydra.yaml``,
  ``overrides.yaml``), rewritten masked by :func:`scrub_files` when the run starts.

Example:
    >>> mask("Cannot open postgresql://me:hunter2@db:notaport/x: bad port")
    'Cannot open postgresql://me:***@db:notaport/x: bad port'
    >>> register("s3cr3t-pw"); mask("PGPASSWORD=s3cr3t-pw")
    'PGPASSWORD=***'
"""
from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote, quote_plus, unquote

__all__ = ["MASK", "mask", "register", "install_log_masking", "scrub_files", "mask_data", "ENV_PASSWORDS"]

MASK = "***"
#: Environment variables whose value is a database password (masked wherever it appears).
ENV_PASSWORDS = ("QSWEEP_STORAGE_PASSWORD", "PGPASSWORD")

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_secrets: set[str] = set()
_lock = threading.Lock()


def register(secret: str | None) -> None:
    """Mask ``secret`` (and its URL-quoted forms) wherever it appears from now on (short ones are ignored)."""
    if not secret or len(secret) < 3:
        return
    with _lock:
        _secrets.update({secret, quote(secret, safe=""), quote_plus(secret), unquote(secret)})


def _mask_url(m: re.Match) -> str:
    token = m.group(0)
    scheme, _, rest = token.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return token
    user, _, password = userinfo.partition(":")
    if password:
        register(unquote(password))
    return f"{scheme}://{user}:{MASK}@{hostpart}"


def mask(text: Any) -> str:
    """``text`` (any object, as ``str``) with every URL password and registered secret replaced by ``***``."""
    s = _URL.sub(_mask_url, str(text))
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in s:
            s = s.replace(secret, MASK)
    return s


def mask_data(data: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with :func:`mask` applied to every string in it."""
    if isinstance(data, str):
        return mask(data)
    if isinstance(data, dict):
        return {k: mask_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask_data(v) for v in data]
    return data


def register_environment() -> None:
    """Register the passwords held in :data:`ENV_PASSWORDS`."""
    for name in ENV_PASSWORDS:
        register(os.environ.get(name))


def install_log_masking() -> None:
    """Mask every log record of the process (message and traceback) when it is created (idempotent)."""
    register_environment()
    old = logging.getLogRecordFactory()
    if getattr(old, "qsweep_masking", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return record
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = mask("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    factory.qsweep_masking = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def scrub_files(paths: Iterable[Path]) -> list[Path]:
    """Rewrite each text file in ``paths`` with :func:`mask` applied; return those that changed."""
    changed = []
    for p in paths:
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        masked = mask(text)
        if masked != text:
            p.write_text(masked)
            changed.append(p)
    return changed
