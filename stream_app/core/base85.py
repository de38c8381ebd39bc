"""base64.b85encode / b85decode, exactly, in numpy.

The meter state carries each meter's calibration as base85 text (a quarter more characters than
its bytes; base64 takes a third more and would push the state past 4 KB). The standard
library's base85 is pure Python, and was a third of the worker's time per reading when readings
arrive one at a time: here every 4-byte word becomes its 5 digits in a few array operations.
The text is the standard library's, character for character (tests/core/test_base85.py).
"""

from __future__ import annotations

import numpy as np

ALPHABET = (b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            b"abcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~")
_DIGITS = np.frombuffer(ALPHABET, np.uint8)
_VALUE = np.full(256, 255, np.uint8)  # character -> digit; 255: not in the alphabet
_VALUE[_DIGITS] = np.arange(85, dtype=np.uint8)
_POWERS = 85 ** np.arange(4, -1, -1, dtype=np.uint64)  # the digits of a word, most significant first


def b85encode(data: bytes) -> bytes:
    pad = -len(data) % 4
    words = np.frombuffer(data + b"\0" * pad, ">u4").astype(np.uint64)
    digits = (words[:, None] // _POWERS) % 85
    text: bytes = _DIGITS[digits].tobytes()
    return text[:len(text) - pad]


def b85decode(text: bytes | str) -> bytes:
    """Raises ValueError for a character outside the alphabet or a group beyond 32 bits, as
    base64.b85decode does."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    pad = -len(raw) % 5
    digits = _VALUE[np.frombuffer(raw + b"~" * pad, np.uint8)]
    if np.any(digits == 255):
        raise ValueError("bad base85 character")
    words = digits.reshape(-1, 5).astype(np.uint64) @ _POWERS
    if np.any(words > 0xFFFFFFFF):
        raise ValueError("base85 overflow")
    out = words.astype(">u4").tobytes()
    return out[:len(out) - pad]
