"""Neutralising untrusted text: no escape sequence or control character gets through."""

from __future__ import annotations

import random
import re

import pytest

from backend.text import clean, clean_line, decode, short

# Anything a terminal could act on, except the tab and newline clean() keeps.
FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
FORBIDDEN_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b[31mred\x1b[0m", "red"),  # SGR colour
        ("a\x1b[2Jb", "ab"),  # clear screen
        ("\x1b[?25lhidden cursor\x1b[?25h", "hidden cursor"),  # private parameters
        ("\x1b[1;31;4mx", "x"),  # several parameters
        ("\x1b[10 qz", "z"),  # intermediate byte before the final one
    ],
)
def test_clean_removes_csi_sequences_with_their_parameters(raw: str, expected: str) -> None:
    assert clean(raw) == expected
    assert clean_line(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b]0;evil title\x07after", "after"),  # OSC ended by BEL
        ("\x1b]0;evil title\x1b\\after", "after"),  # OSC ended by ST
        ("\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),  # hyperlink
        ("\x1b]52;c;ZXZpbA==\x07ok", "ok"),  # clipboard write
        ("before\x1b]0;unterminated title", "before"),  # never terminated: dropped to the end
    ],
)
def test_clean_removes_osc_sequences_with_bel_or_st_terminators(raw: str, expected: str) -> None:
    assert clean(raw) == expected
    assert clean_line(raw) == expected


def test_clean_removes_dcs_and_apc_strings() -> None:
    assert clean("a\x1bPq#0;2;0;0;0\x1b\\b") == "ab"
    assert clean("a\x1b_payload\x1b\\b") == "ab"


def test_clean_removes_eight_bit_csi_and_c1_controls() -> None:
    assert clean("\x9b31mred\x9b0m") == "red"
    # C1 controls on their own (NEL, DCS, OSC, ST introducers) are dropped too.
    assert clean("a\x85b\x90c\x9dd\x9ce") == "abcde"


def test_clean_removes_a_lone_escape_and_two_byte_escape_sequences_whole() -> None:
    assert clean("tail\x1b") == "tail"
    assert clean("\x1bcreset") == "reset"  # ESC c: full terminal reset, the 'c' goes with it
    assert clean("a\x1b7b\x1b8c") == "abc"  # save/restore cursor
    assert clean("a\x1b=b\x1b>c") == "abc"  # keypad modes


def test_clean_removes_charset_selection_as_printed_by_tput_sgr0() -> None:
    # `tput sgr0` on xterm prints ESC ( B ESC [ m: no "(B" may be left behind.
    assert clean("\x1b(B\x1b[mplain") == "plain"
    assert clean("\x1b#8x") == "x"


def test_clean_keeps_newlines_and_tabs_but_drops_other_c0_controls() -> None:
    assert clean("one\ttwo\nthree\x00\x07\x08\x7f four") == "one\ttwo\nthree four"


def test_clean_turns_carriage_returns_into_newlines_so_nothing_overprints() -> None:
    assert clean("windows\r\nline") == "windows\nline"
    assert clean("progress 10%\rprogress 100%\n") == "progress 10%\nprogress 100%\n"
    assert "\r" not in clean("a\r\r\nb\r")


def test_clean_line_makes_one_line_of_controls_newlines_and_carriage_returns() -> None:
    assert clean_line("subject\nsecond line") == "subject second line"
    assert clean_line("a\tb\rc") == "a b c"
    assert clean_line("\x1b[31mred\x1b[0m\x07") == "red "


def test_clean_leaves_markup_like_text_literally() -> None:
    # Markup is not text.py's concern: brackets must come back unchanged.
    assert clean("fix [/] parsing [bold red]hello") == "fix [/] parsing [bold red]hello"
    assert clean_line("[link=https://x]click[/link]") == "[link=https://x]click[/link]"


def test_clean_keeps_ordinary_unicode() -> None:
    text = "café ☕ 日本語 emoji 🚀 — ok"
    assert clean(text) == text
    assert clean_line(text) == text


def test_no_control_character_survives_random_input() -> None:
    """Whatever the mix of escapes and controls, nothing a terminal acts on remains."""
    rng = random.Random(1234)
    alphabet = ["\x1b", "[", "]", "\\", "\x07", "\x9b", "\x9c", "\x9d", "\r", "\n", "\t", "\x00",
                "\x7f", "\x85", "P", "_", ";", "0", "9", "m", "a", "é", " ", "?", "~", "@"]
    for _ in range(3000):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        cleaned = clean(raw)
        assert not FORBIDDEN.search(cleaned), (raw, cleaned)
        line = clean_line(raw)
        assert not FORBIDDEN_ONE_LINE.search(line), (raw, line)


def test_decode_never_raises_on_invalid_utf8() -> None:
    assert decode(b"bad \xff\xfe byte") == "bad \ufffd\ufffd byte"
    assert decode("ok é".encode()) == "ok é"
    assert decode(b"\xc3") == "\ufffd"  # a truncated sequence


def test_short_gives_seven_characters_and_handles_none() -> None:
    assert short("0123456789abcdef") == "0123456"
    assert short(None) == ""
