"""Protobuf *text format* (``.prototxt``) parser, schema-free.

Part of the hand-written Caffe reader (see ``_proto`` for why):
gives a tree of :class:`Message` (field name -> list of values) with line
numbers for error messages. Enum values stay identifiers (``MAX``), numbers
become ``int``/``float``, ``true``/``false`` become ``bool``.
"""

from __future__ import annotations

import re

from ..._protobuf import Message
from ...errors import CaffeFormatError

__all__ = ["parse_text_message"]


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+) | (?P<nl>\n) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[-+]?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>:\[\],;])
""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            octal = re.match(r"[0-7]{1,3}", body[i + 1:])
            if octal:
                out.append(chr(int(octal.group(), 8)))
                i += 1 + len(octal.group())
                continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokenize(text: str, where: str) -> list:
    tokens, line, pos = [], 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise CaffeFormatError(f"{where}, line {line}: unexpected character {text[pos]!r}.")
        kind = m.lastgroup
        if kind == "nl":
            line += 1
        elif kind not in ("ws", "comment"):
            tokens.append((kind, m.group(), line))
        pos = m.end()
    return tokens


def _scalar(kind: str, text: str):
    if kind == "string":
        return _unescape(text[1:-1])
    if kind == "number":
        body = text[:-1] if text[-1] in "fF" and not text.lower().startswith(("0x", "-0x")) else text
        if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
            return int(body, 16)
        if re.fullmatch(r"[-+]?\d+", body):
            return int(body)
        return float(body)
    low = text.lower()
    if low in ("true", "t"):
        return True
    if low in ("false", "f"):
        return False
    if low.lstrip("+-") in ("inf", "infinity", "nan"):
        return float(low)
    return text


class _TextParser:
    MAX_DEPTH = 100  # Caffe's messages nest a few levels; deeper input is damaged or crafted

    def __init__(self, tokens: list, where: str):
        self.tokens, self.pos, self.where, self.depth = tokens, 0, where, 0

    def _error(self, msg: str):
        line = self.tokens[self.pos][2] if self.pos < len(self.tokens) else (
            self.tokens[-1][2] if self.tokens else 1)
        raise CaffeFormatError(f"{self.where}, line {line}: {msg}")

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None, None)

    def _take(self):
        tok = self._peek()
        self.pos += 1
        return tok

    def message(self, closing: str | None, line: int) -> Message:
        self.depth += 1
        if self.depth > self.MAX_DEPTH:
            self._error(f"messages are nested more than {self.MAX_DEPTH} deep; the file is damaged.")
        try:
            return self._message(closing, line)
        finally:
            self.depth -= 1

    def _message(self, closing: str | None, line: int) -> Message:
        msg = Message(line)
        while True:
            kind, text, tline = self._peek()
            if kind is None:
                if closing is not None:
                    self._error(f"missing {closing!r}: the message opened on line {line} is never closed.")
                return msg
            if kind == "punct" and text == closing:
                self.pos += 1
                return msg
            if kind == "punct" and text in ",;":
                self.pos += 1
                continue
            if kind != "ident":
                self._error(f"expected a field name, got {text!r}.")
            self.pos += 1
            self._field(msg, text, tline)

    def _field(self, msg: Message, name: str, line: int) -> None:
        kind, text, _ = self._peek()
        colon = kind == "punct" and text == ":"
        if colon:
            self.pos += 1
            kind, text, _ = self._peek()
        if kind == "punct" and text in "{<":
            self.pos += 1
            msg.add(name, self.message("}" if text == "{" else ">", line))
        elif kind == "punct" and text == "[":
            self.pos += 1
            while True:
                kind, text, _ = self._peek()
                if kind == "punct" and text == "]":
                    self.pos += 1
                    break
                if kind == "punct" and text == ",":
                    self.pos += 1
                    continue
                if kind == "punct" and text in "{<":
                    self.pos += 1
                    msg.add(name, self.message("}" if text == "{" else ">", line))
                else:
                    msg.add(name, self._value(name))
        elif not colon:
            self._error(f"expected ':' or '{{' after field {name!r}, got {text!r}.")
        else:
            msg.add(name, self._value(name))

    def _value(self, name: str):
        kind, text, _ = self._take()
        if kind in ("string", "number", "ident"):
            value = _scalar(kind, text)
            while kind == "string" and self._peek()[0] == "string":  # "a" "b" concatenation
                value += _scalar("string", self._take()[1])
            return value
        self.pos -= 1
        self._error(f"expected a value for field {name!r}, got {text!r}.")


def parse_text_message(text: str, where: str = "<prototxt>") -> Message:
    """Parse protobuf text format into a :class:`Message` tree (no schema needed)."""
    return _TextParser(_tokenize(text, where), where).message(None, 1)
