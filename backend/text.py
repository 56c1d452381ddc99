"""Neutralising untrusted text (commit subjects, author names, command output).

Everything that comes from git, a deploy command or a server passes through
:func:`clean` where it enters andon, so no escape sequence reaches a terminal and
no byte sequence can break decoding. Markup is a separate concern: the dashboard
shows text as plain ``Text``/``Content``, never as markup.

Besides terminal controls, the invisible format characters that reorder or hide
text (bidirectional overrides and isolates, zero-width spaces and joiners, the
byte order mark) are removed: a subject must read the same on screen as in git.
"""

from __future__ import annotations

import re

# Terminal escape sequences, matched whole so that their parameters go too.
_ESCAPE = r"""
    \x1b\[[0-?]*[ -/]*[@-~]               # CSI ... final byte
    | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?  # OSC ... BEL or ST
    | \x1b[PX^_][^\x1b]*(?:\x1b\\)?       # DCS / SOS / PM / APC ... ST
    | \x1b[ -/]*[0-~]?                    # any other ESC: ESC ( B (tput sgr0), ESC c, ESC 7 ...
    | \x9b[0-?]*[ -/]*[@-~]               # 8-bit CSI
"""
# Invisible format characters: the Arabic letter mark, zero-width space / non-joiner /
# joiner, left-to-right and right-to-left marks, bidi embeddings and overrides, word
# joiner and invisible operators, bidi isolates, and the zero-width no-break space (BOM).
_FORMAT = "\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"

_CONTROLS = r"\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 and C1 except tab and newline
# On one line the line and paragraph separators (U+2028, U+2029) are line breaks too: some
# chat clients and editors break there, so a reason could fake a second line.
_CONTROLS_ONE_LINE = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
# Escapes are tried before single characters, so ESC and 8-bit CSI take their parameters along.
_CLEAN = re.compile(_ESCAPE + f"| [{_CONTROLS}{_FORMAT}]", re.VERBOSE)
# Group 1 is a control character, which becomes a space; the rest of a match is removed.
_CLEAN_LINE = re.compile(_ESCAPE + f"| ([{_CONTROLS_ONE_LINE}]) | [{_FORMAT}]", re.VERBOSE)
# One character class is a fast scan: most text has nothing to clean and is returned as is.
_NEEDS_CLEAN = re.compile(f"[{_CONTROLS}{_FORMAT}]")
_NEEDS_CLEAN_LINE = re.compile(f"[{_CONTROLS_ONE_LINE}{_FORMAT}]")

# The same for raw UTF-8, NUL left out (it separates the fields of git's -z output):
# a byte that can start something to clean, then what must follow it. A lead byte of
# ordinary text ("é" \xc3\xa9, "—" \xe2\x80\x94) fails the second part and the scan goes on.
_BYTES_NEED_CLEANING = re.compile(
    rb"""
    [\x01-\x1f\x7f\xc2\xd8\xe2\xef]   # one character class first: a fast scan
    (?: (?<=[\x01-\x1f\x7f])          # a C0 control but NUL, or DEL
      | (?<=\xc2) [\x80-\x9f]         # a C1 control
      | (?<=\xd8) \x9c                # U+061C
      | (?<=\xe2) \x80 [\x8b-\x8f\xa8-\xae]  # U+200B-U+200F, U+2028-U+202E
      | (?<=\xe2) \x81 [\xa0-\xa4\xa6-\xa9]  # U+2060-U+2064, U+2066-U+2069
      | (?<=\xef) \xbb \xbf           # U+FEFF
    )
    """,
    re.VERBOSE,
)
# Every byte but those lead bytes: deleting them leaves nothing in most of git's output,
# faster than even the regex's scan.
_NOT_LEAD_BYTES = bytes(b for b in range(256) if not (0 < b < 0x20 or b in b"\x7f\xc2\xd8\xe2\xef"))


def decode(data: bytes) -> str:
    """Bytes from outside as text: invalid UTF-8 becomes U+FFFD, never an error."""
    return data.decode("utf-8", errors="replace")


def clean(text: str) -> str:
    """Multi-line untrusted text with escape sequences, control and format characters removed.

    Tabs and newlines stay; a carriage return before a newline is dropped and any
    other carriage return becomes a newline, so progress bars do not overprint.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _NEEDS_CLEAN.search(text) is None:
        return text
    return _CLEAN.sub("", text)


def _line_replacement(match: re.Match[str]) -> str:
    return " " if match.group(1) else ""


def clean_line(text: str) -> str:
    """Single-line untrusted text (a subject, a name): control characters become spaces,
    escape sequences and invisible format characters go."""
    if _NEEDS_CLEAN_LINE.search(text) is None:
        return text
    return _CLEAN_LINE.sub(_line_replacement, text)


def has_controls(text: str) -> bool:
    """Whether ``text`` holds anything :func:`clean_line` would change (ESC included)."""
    return _NEEDS_CLEAN_LINE.search(text) is not None


def bytes_need_cleaning(data: bytes) -> bool:
    """Whether :func:`clean_line` could change a field of ``decode(data)``: a fast test of
    raw UTF-8 (git's output) before splitting and cleaning it.

    True when ``data`` holds a C0 control other than NUL (tab, newline and carriage
    return included, ESC too), DEL, a C1 control (``\\xc2\\x80``-``\\xc2\\x9f``) or one
    of the invisible format characters :func:`clean_line` removes. NUL does not count:
    it is the separator of ``git -z`` output, which the caller splits on. Invalid UTF-8
    does not count either: :func:`decode` makes it U+FFFD, which stays. Ordinary text,
    non-ASCII included, gives False.
    """
    if not data.translate(None, _NOT_LEAD_BYTES):
        return False
    return _BYTES_NEED_CLEANING.search(data) is not None


def cell_text(value: object) -> str:
    """Any value read from a file another program may have written, as one clean line."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return clean_line(decode(value))
    return clean_line(str(value))


def short(sha: str | None) -> str:
    return (sha or "")[:7]
