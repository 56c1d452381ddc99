"""Neutralising untrusted text (commit subjects, author names, command output).

Everything that comes from git, a deploy command or a server passes through
:func:`clean` where it enters andon, so no escape sequence reaches a terminal and
no byte sequence can break decoding. Markup is a separate concern: the dashboard
shows text as plain ``Text``/``Content``, never as markup.
"""

from __future__ import annotations

import re

# CSI / OSC / other ESC sequences first (so their parameters go too), then any
# remaining C0/C1 control character except tab and newline.
_ESCAPES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]          # CSI ... final byte
    | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?  # OSC ... BEL or ST
    | \x1b[PX^_][^\x1b]*(?:\x1b\\)?  # DCS / SOS / PM / APC ... ST
    | \x1b[ -/]*[0-~]?               # any other ESC: ESC ( B (tput sgr0), ESC c, ESC 7 ...
    | \x9b[0-?]*[ -/]*[@-~]          # 8-bit CSI
    """,
    re.VERBOSE,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def decode(data: bytes) -> str:
    """Bytes from outside as text: invalid UTF-8 becomes U+FFFD, never an error."""
    return data.decode("utf-8", errors="replace")


def clean(text: str) -> str:
    """Multi-line untrusted text with escape sequences and control characters removed.

    Tabs and newlines stay; a carriage return before a newline is dropped and any
    other carriage return becomes a newline, so progress bars do not overprint.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def clean_line(text: str) -> str:
    """Single-line untrusted text (a subject, a name): controls become spaces."""
    return _CONTROLS_ONE_LINE.sub(" ", _ESCAPES.sub("", text))


def has_controls(text: str) -> bool:
    """Whether ``text`` holds anything :func:`clean_line` would change (ESC included)."""
    return _CONTROLS_ONE_LINE.search(text) is not None


def short(sha: str | None) -> str:
    return (sha or "")[:7]
