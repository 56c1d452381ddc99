"""Neutralising untrusted text: no escape sequence or control character gets through."""

from __future__ import annotations

import random
import unicodedata

import pytest

from backend.text import bytes_need_cleaning, clean, clean_line, decode, has_controls, short

# Invisible characters that reorder or hide text, by their Unicode names.
INVISIBLE = {unicodedata.lookup(name) for name in (
    "ARABIC LETTER MARK",
    "ZERO WIDTH SPACE", "ZERO WIDTH NON-JOINER", "ZERO WIDTH JOINER",
    "LEFT-TO-RIGHT MARK", "RIGHT-TO-LEFT MARK",
    "LEFT-TO-RIGHT EMBEDDING", "RIGHT-TO-LEFT EMBEDDING", "POP DIRECTIONAL FORMATTING",
    "LEFT-TO-RIGHT OVERRIDE", "RIGHT-TO-LEFT OVERRIDE",
    "WORD JOINER", "FUNCTION APPLICATION", "INVISIBLE TIMES", "INVISIBLE SEPARATOR", "INVISIBLE PLUS",
    "LEFT-TO-RIGHT ISOLATE", "RIGHT-TO-LEFT ISOLATE", "FIRST STRONG ISOLATE", "POP DIRECTIONAL ISOLATE",
    "ZERO WIDTH NO-BREAK SPACE",
)}


def survivors(text: str, allowed: str = "") -> list[str]:
    """Characters of ``text`` a terminal could act on or that hide text, but for ``allowed``."""
    return [ch for ch in text
            if ch not in allowed and (unicodedata.category(ch) == "Cc" or ch in INVISIBLE)]


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


def test_no_control_or_invisible_character_survives_random_input_and_plain_text_does() -> None:
    """Whatever the mix of escapes, controls and format characters, nothing a terminal acts
    on and nothing invisible remains, while a word outside any escape sequence comes through."""
    rng = random.Random(1234)
    alphabet = ["\x1b", "[", "]", "\\", "\x07", "\x9b", "\x9c", "\x9d", "\r", "\n", "\t", "\x00",
                "\x7f", "\x85", "P", "_", ";", "0", "9", "m", "a", "é", " ", "?", "~", "@", "(",
                "\u061c", "\u200b", "\u200d", "\u200f", "\u202a", "\u202e", "\u2060", "\u2064",
                "\u2066", "\u2069", "\ufeff"]

    def junk() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))

    for _ in range(3000):
        # ST ends whatever sequence the junk before it left open, so the word is plain text.
        raw = junk() + "\x1b\\ word " + junk()
        cleaned = clean(raw)
        assert survivors(cleaned, allowed="\t\n") == [], (raw, cleaned)
        assert " word " in cleaned, (raw, cleaned)
        line = clean_line(raw)
        assert survivors(line) == [], (raw, line)
        assert " word " in line, (raw, line)


def test_clean_line_removes_bidi_overrides_and_zero_width_characters_from_a_subject() -> None:
    # "Fix <RLO>gpj.exe" shows as "Fix exe.jpg"; "ad<ZWSP>min" looks like "admin" but is not.
    assert clean_line("Fix \u202egpj.exe") == "Fix gpj.exe"
    assert clean_line("ad\u200bmin") == "admin"
    assert clean_line("\ufeffBOM \u2066isolated\u2069 \u200emarked\u200f \u061c") == "BOM isolated marked "
    assert clean("line one\u202e\nline\u200b two\n") == "line one\nline two\n"
    assert has_controls("Fix \u202egpj.exe") and has_controls("ad\u200bmin")


def test_clean_line_removes_format_characters_but_makes_control_characters_spaces() -> None:
    assert clean_line("a\u200bb\tc\u202ed\x85e") == "ab cd e"


def test_has_controls_is_false_for_ordinary_unicode() -> None:
    assert not has_controls("café ☕ 日本語 emoji 🚀 — don’t, نص عربي, עברית")


@pytest.mark.parametrize(
    "data",
    [
        b"\x1b[31mred",  # ESC
        b"subject\nsecond line", b"a\tb", b"a\rb", b"\x01", b"\x7f",  # C0 and DEL: one-line fields
        b"\xc2\x9b2J", b"\xc2\x85",  # C1 (8-bit CSI, NEL) as UTF-8
        b"Fix \xe2\x80\xaegpj.exe",  # U+202E RIGHT-TO-LEFT OVERRIDE
        b"ad\xe2\x80\x8bmin",  # U+200B ZERO WIDTH SPACE
        b"\xef\xbb\xbfBOM",  # U+FEFF
        b"\xd8\x9c", b"\xe2\x80\x8f", b"\xe2\x80\xaa", b"\xe2\x81\xa0", b"\xe2\x81\xa4",
        b"\xe2\x81\xa6", b"\xe2\x81\xa9",  # the ends of each range
        b"a" * 40 + b"\x00\x00Ann\x00\x00caf\xc3\xa9 \xe2\x80\x94 \x1b[2J\x00",  # ESC in a git record
        "— ’ é \u202e".encode(),  # after harmless lead bytes of the same kind
    ],
)
def test_bytes_need_cleaning_finds_controls_and_invisible_characters(data: bytes) -> None:
    assert bytes_need_cleaning(data)


@pytest.mark.parametrize(
    "data",
    [
        b"", b"plain ascii subject",
        "é".encode(), "—".encode(), "’".encode(), "café ☕ 日本語 🚀 نص".encode(),
        b"a" * 40 + b"\x00" + b"b" * 40 + b"\x00Ann \xc3\xa9\x002024-01-01\x00Fix \xe2\x80\x94 don\xe2\x80\x99t\x00",
        b"\xc2\xa0", b"\xc2",  # NBSP; a lone lead byte
        b"\xe2\x80\x8a", b"\xe2\x80\xaf", b"\xe2\x81\xa5", b"\xef\xbb\xbe",  # neighbours of the ranges
        b"bad \xff\xfe bytes",  # invalid UTF-8: decode() makes it U+FFFD, which stays
    ],
)
def test_bytes_need_cleaning_is_false_for_ordinary_text_and_nul_separators(data: bytes) -> None:
    assert not bytes_need_cleaning(data)
    assert clean_line(decode(data)) == decode(data).replace("\x00", " ")


def test_bytes_need_cleaning_and_has_controls_agree_with_clean_line_on_every_character() -> None:
    """Each fast check says True exactly when clean_line would change the character."""
    for code in [*range(1, 0xD800), *range(0xE000, 0x10000), *range(0x10000, 0x110000, 251)]:
        char = chr(code)
        changes = clean_line(char) != char
        assert has_controls(char) == changes, hex(code)
        assert bytes_need_cleaning(char.encode()) == changes, hex(code)
        assert bytes_need_cleaning(b"\xe2\x80\x94" + char.encode() + b"\x00") == changes, hex(code)


def test_decode_never_raises_on_invalid_utf8() -> None:
    assert decode(b"bad \xff\xfe byte") == "bad \ufffd\ufffd byte"
    assert decode("ok é".encode()) == "ok é"
    assert decode(b"\xc3") == "\ufffd"  # a truncated sequence


def test_short_gives_seven_characters_and_handles_none() -> None:
    assert short("0123456789abcdef") == "0123456"
    assert short(None) == ""


def test_line_and_paragraph_separators_do_not_break_a_line() -> None:
    """U+2028/U+2029 are line breaks to some chat clients and editors: a reason must not fake a second line."""
    assert clean_line("api down\u2028@everyone deploy now\u2029ok") == "api down @everyone deploy now ok"
