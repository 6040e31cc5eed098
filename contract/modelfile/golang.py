"""The Go standard-library rules Ollama's Modelfile path leans on, so our checks read values as Ollama does.

Learned from Go's `strconv` (ParseInt, ParseFloat, ParseBool, Unquote, IsPrint), `unicode` (IsLetter,
IsDigit, IsSpace), `strings.TrimSpace`, golang.org/x/mod/semver and golang.org/x/text's BOM override.
Rune classes come from a table pinned to the Unicode version of the Go that Ollama releases build with
(`_go_printable.py`), not from the running Python's `unicodedata`.
"""

from __future__ import annotations

import bisect
import math
import re
from fractions import Fraction
from functools import cache

from contract.modelfile import _go_printable

UNICODE_VERSION = _go_printable.UNICODE_VERSION
# unicode.IsSpace: the Latin-1 spaces plus the White_Space runes above U+00FF (stable across versions).
_GO_SPACES = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(
    chr(c) for c in range(0x2000, 0x200B)
)


@cache
def _table(name: str) -> tuple[list[int], list[int]]:
    starts, ends = [], []
    for word in "".join(getattr(_go_printable, name)).split():
        a, _, b = word.partition("-")
        starts.append(int(a, 16))
        ends.append(int(b or a, 16))
    return starts, ends


def _in(name: str, ch: str) -> bool:
    starts, ends = _table(name)
    i = bisect.bisect_right(starts, ord(ch)) - 1
    return i >= 0 and ord(ch) <= ends[i]


def is_print(ch: str) -> bool:
    """strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    return " " <= ch <= "~" or (ch > "~" and _in("PRINT", ch))


def is_letter(ch: str) -> bool:
    return ch.isascii() and ch.isalpha() or (not ch.isascii() and _in("LETTER", ch))


def is_digit(ch: str) -> bool:
    return "0" <= ch <= "9" or (not ch.isascii() and _in("DIGIT", ch))


def trim_space(s: str) -> str:
    """strings.TrimSpace."""
    start, end = 0, len(s)
    while start < end and s[start] in _GO_SPACES:
        start += 1
    while end > start and s[end - 1] in _GO_SPACES:
        end -= 1
    return s[start:end]


def _bom(data: bytes) -> tuple[int, str]:
    """(BOM length, codec) as unicode.BOMOverride picks them; UTF-8 without a BOM otherwise."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le")):
        if data.startswith(bom):
            return len(bom), codec
    return 0, "utf-8"


def first_invalid(data: bytes) -> str | None:
    """The decoded text before the first byte Ollama's decoder replaces with U+FFFD, or None."""
    skip, codec = _bom(data)
    try:
        data[skip:].decode(codec)
    except UnicodeDecodeError as e:
        return data[skip : skip + e.start].decode(codec)
    return None


def decode_modelfile(data: bytes) -> str:
    """Bytes as Ollama's parser reads them: unicode.BOMOverride over a UTF-8 decoder.

    A UTF-8 BOM is dropped, a UTF-16 BOM (either order) switches to UTF-16; every invalid byte (or
    unpaired UTF-16 unit) becomes one U+FFFD, as Go's decoders do.
    """
    skip, codec = _bom(data)
    return data[skip:].decode(codec, "go-replace")


def _go_replace(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):  # a decoding handler only: encoders never name it
        raise err
    # Go's UTF-8 decoder yields one U+FFFD per invalid byte; its UTF-16 decoder one per 16-bit unit.
    width = 2 if "16" in err.encoding else 1
    return "\ufffd" * math.ceil((err.end - err.start) / width), err.end


import codecs  # noqa: E402  (registered once, right after the handler it names)

codecs.register_error("go-replace", _go_replace)


class GoSyntaxError(ValueError):
    """strconv.ErrSyntax: the text is not a number of that kind."""


class GoRangeError(ValueError):
    """strconv.ErrRange: the number is out of range for its type."""


def parse_int(s: str, base: int = 10, bits: int = 64) -> int:
    """strconv.ParseInt. With base 10 (what Ollama's FormatParams uses): ASCII digits only, no `_`."""
    sign, body = (s[0], s[1:]) if s[:1] in ("+", "-") else ("", s)
    value = parse_uint(body, base, bits, signed=True)
    value = -value if sign == "-" else value
    if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
        raise GoRangeError(s)
    return value


def parse_uint(s: str, base: int = 10, bits: int = 64, signed: bool = False) -> int:
    """strconv.ParseUint; base 0 reads Go's prefixes (0x, 0o, 0b, leading 0) and `_` separators."""
    if not s:
        raise GoSyntaxError(s)
    original, base0 = s, base == 0
    if base0:
        base = 10
        if s[0] == "0":
            prefix = s[1:2].lower()
            if len(s) >= 3 and prefix in ("b", "o", "x"):
                base, s = {"b": 2, "o": 8, "x": 16}[prefix], s[2:]
            else:
                base, s = 8, s[1:]
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"[:base]
    value, underscores = 0, False
    for ch in s:
        if ch == "_" and base0:
            underscores = True
            continue
        d = digits.find(ch.lower()) if ch.isascii() else -1
        if d < 0:
            raise GoSyntaxError(original)
        value = value * base + d
    if underscores and not underscore_ok(original):
        raise GoSyntaxError(original)
    if value >= (1 << bits) and not signed:
        raise GoRangeError(original)
    return value


def underscore_ok(s: str) -> bool:
    """Go's rule for `_` in number literals: only between digits, or after a base prefix."""
    saw, i = "^", 0
    if s[:1] in ("+", "-"):
        s = s[1:]
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    for ch in s[i:]:
        if "0" <= ch <= "9" or (hexa and "a" <= ch.lower() <= "f"):
            saw = "0"
        elif ch == "_":
            if saw != "0":
                return False
            saw = "_"
        elif saw == "_":
            return False
        else:
            saw = "!"
    return saw != "_"


_SPECIAL_FLOAT = re.compile(r"[+-]?(?:inf|infinity)|nan", re.IGNORECASE)
# (precision in bits, lowest normal exponent, highest exponent) of float32 and float64.
_FLOAT_FORMATS = {32: (24, -126, 127), 64: (53, -1022, 1023)}


def parse_float(s: str, bits: int = 64) -> float:
    """strconv.ParseFloat: Go's decimal and hexadecimal float syntax, `inf`/`nan`, correctly rounded to
    `bits`; a finite value that rounds past the largest float of that size is an ErrRange."""
    if _SPECIAL_FLOAT.fullmatch(s):
        return math.nan if s[-1] in "nN" else (-math.inf if s[0] == "-" else math.inf)
    negative, exact = _read_float(s)
    value = _round_binary(exact, bits)
    return -value if negative else value


def _read_float(s: str) -> tuple[bool, Fraction]:
    """The exact value of a Go float literal (as strconv's readFloat accepts it), or GoSyntaxError."""
    i, n = 0, len(s)
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        i = 1
    base, exp_char = 10, "e"
    if i + 2 < n and s[i] == "0" and s[i + 1] in "xX":
        base, exp_char, i = 16, "p", i + 2
    digits, frac_digits, saw_dot, underscores = [], 0, False, False
    while i < n:
        ch = s[i]
        if ch == "_":
            underscores = True
        elif ch == "." and not saw_dot:
            saw_dot = True
        elif ch.isascii() and ch.isdigit() or (base == 16 and ch.lower() in "abcdef"):
            digits.append(ch)
            frac_digits += saw_dot
        else:
            break
        i += 1
    if not digits:
        raise GoSyntaxError(s)
    exponent = 0
    if i < n and s[i].lower() == exp_char:
        i += 1
        sign = -1 if s[i : i + 1] == "-" else 1
        i += s[i : i + 1] in ("+", "-")
        if i >= n or not ("0" <= s[i] <= "9"):
            raise GoSyntaxError(s)
        while i < n and ("0" <= s[i] <= "9" or s[i] == "_"):
            if s[i] == "_":
                underscores = True
            elif exponent < 10000:  # Go stops counting here: the value is 0 or Inf either way
                exponent = exponent * 10 + int(s[i])
            i += 1
        exponent *= sign
    elif base == 16:
        raise GoSyntaxError(s)  # a hex float needs its p exponent
    if i != n or (underscores and not underscore_ok(s[:i])):
        raise GoSyntaxError(s)
    mantissa = int("".join(digits), base)
    if mantissa == 0:
        return negative, Fraction(0)
    if base == 16:
        return negative, Fraction(mantissa) * Fraction(2) ** (exponent - 4 * frac_digits)
    scale = exponent - frac_digits
    if len(str(mantissa)) + scale > 400:  # past any float: skip building a huge number
        raise GoRangeError(s)
    if len(str(mantissa)) + scale < -400:
        return negative, Fraction(0)
    return negative, Fraction(mantissa) * Fraction(10) ** scale


def _round_binary(x: Fraction, bits: int) -> float:
    """x rounded to the nearest float of `bits` bits (ties to even); GoRangeError past the largest."""
    if x == 0:
        return 0.0
    precision, emin, emax = _FLOAT_FORMATS[bits]
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** e > x:
        e -= 1
    e = max(e, emin)
    quantum = Fraction(2) ** (e - precision + 1)
    scaled = x / quantum
    m = math.floor(scaled)
    rest = scaled - m
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and m % 2 == 1):
        m += 1
    if m * quantum >= Fraction(2) ** (emax + 1):
        raise GoRangeError("value out of range")
    return math.ldexp(m, e - precision + 1)


_GO_BOOLS = {
    "1": True,
    "t": True,
    "T": True,
    "TRUE": True,
    "true": True,
    "True": True,
    "0": False,
    "f": False,
    "F": False,
    "FALSE": False,
    "false": False,
    "False": False,
}


def parse_bool(s: str) -> bool:
    """strconv.ParseBool: exactly 1, t, T, TRUE, true, True, 0, f, F, FALSE, false or False."""
    if s not in _GO_BOOLS:
        raise GoSyntaxError(s)
    return _GO_BOOLS[s]


def shortest_float32(x: float) -> float:
    """The float32 x as Go's JSON carries it: its shortest decimal, read back as a float64."""
    if not math.isfinite(x) or x == 0:
        return x
    for digits in range(1, 10):
        text = f"{x:.{digits}g}"
        try:
            if _round_binary(abs(Fraction(text)), 32) == abs(x):
                return float(text)
        except GoRangeError:  # a shorter decimal that rounds past the largest float32
            continue
    return x


_SEMVER_INT = r"(?:0|[1-9][0-9]*)"
_SEMVER_IDENT = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"v{_SEMVER_INT}(?:\.{_SEMVER_INT}(?:\.{_SEMVER_INT}"
    rf"(?:-{_SEMVER_IDENT}(?:\.{_SEMVER_IDENT})*)?(?:\+{_SEMVER_IDENT}(?:\.{_SEMVER_IDENT})*)?)?)?"
)


def semver_valid(v: str) -> bool:
    """golang.org/x/mod/semver.IsValid: vMAJOR[.MINOR[.PATCH[-PRERELEASE][+BUILD]]], no leading zeros
    in numbers or numeric pre-release identifiers (build identifiers may have them)."""
    if not _SEMVER.fullmatch(v):
        return False
    pre = v.split("+", 1)[0].partition("-")[2]
    return not any(p.isdigit() and len(p) > 1 and p[0] == "0" for p in pre.split("."))


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote_char(s: str, quote: str) -> tuple[str, str]:
    """strconv.UnquoteChar: (the first character of a Go literal body, the rest), or GoSyntaxError."""
    if not s:
        raise GoSyntaxError(s)
    ch = s[0]
    if ch == quote and quote in "'\"":
        raise GoSyntaxError(s)
    if ch != "\\":
        return ch, s[1:]
    if len(s) < 2:
        raise GoSyntaxError(s)
    c, rest = s[1], s[2:]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], rest
    if c in "'\"":
        if c != quote:
            raise GoSyntaxError(s)
        return c, rest
    width = {"x": 2, "u": 4, "U": 8}.get(c)
    if width:
        hexa = rest[:width]
        if len(hexa) < width or not all(h in "0123456789abcdefABCDEF" for h in hexa):
            raise GoSyntaxError(s)
        v = int(hexa, 16)
        if c != "x" and (v > 0x10FFFF or 0xD800 <= v <= 0xDFFF):
            raise GoSyntaxError(s)
        return chr(v), rest[width:]
    if "0" <= c <= "7":
        octal = s[1:4]
        if len(octal) < 3 or not all("0" <= o <= "7" for o in octal) or int(octal, 8) > 255:
            raise GoSyntaxError(s)
        return chr(int(octal, 8)), s[4:]
    raise GoSyntaxError(s)


def unquote(s: str) -> str:
    """strconv.Unquote for "…" and `…` literals (the forms text/template lexes)."""
    if len(s) < 2 or s[0] != s[-1] or s[0] not in '"`':
        raise GoSyntaxError(s)
    body = s[1:-1]
    if s[0] == "`":
        if "`" in body:
            raise GoSyntaxError(s)
        return body.replace("\r", "")
    if "\n" in body:
        raise GoSyntaxError(s)
    out = []
    while body:
        ch, body = unquote_char(body, '"')
        out.append(ch)
    return "".join(out)
