"""Secrets stay in the process: credentials in URLs are masked in any text that leaves it.

A camera's URL carries its password (`rtsp://user:password@host/...`, or `?pwd=...` in the
query), and ffmpeg repeats the URL in its error lines, which become log lines and the retained
info every subscriber reads. `mask_secrets` is the one function that masks them: `config check`,
source errors, every log line and the command line's error go through it.
"""

import logging
import re

MASK = "***"

_USERINFO = re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s/]*(?=@)")
"""scheme://user:password@ -> the password, up to the last @ before the path or a blank."""
_QUERY = re.compile(
    r"(?P<keep>[?&;][\w.-]*?(?:pass(?:word|wd)?|pwd|token|secret|key|auth|sig(?:nature)?)=)"
    r"[^&\s#]*",
    re.IGNORECASE,
)
"""?password=..., &pwd=..., &api_key=..., &token=...: values of parameters named like secrets."""

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def mask_secrets(text: str) -> str:
    """rtsp://user:secret@cam/?pwd=secret -> rtsp://user:***@cam/?pwd=*** anywhere in text."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(rf"\g<keep>{MASK}", text)
    return _QUERY.sub(rf"\g<keep>{MASK}", text)


class MaskingFormatter(logging.Formatter):
    """Formats a record as usual, then masks the whole line: message, arguments, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def log_to_stderr(level: str) -> None:
    """The listener's logging (`run` and `addon`): lines on stderr, secrets masked."""
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
