"""The numpy base85 codec writes and reads the standard library's text, character for character."""

import base64

import numpy as np
import pytest

from stream_app.core.base85 import b85decode, b85encode


@pytest.mark.parametrize("n", [*range(0, 13), 2399, 2400, 2401, 2402, 2403])
def test_the_text_is_the_standard_librarys_both_ways(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    text = base64.b85encode(data)
    assert b85encode(data) == text
    assert b85decode(text) == data and b85decode(text.decode("ascii")) == data


def test_the_extremes_of_a_word():
    for data in (b"\0\0\0\0", b"\xff\xff\xff\xff", b"\xff" * 9, b"\0" * 7):
        assert b85encode(data) == base64.b85encode(data)
        assert b85decode(base64.b85encode(data)) == data


@pytest.mark.parametrize("text", [b"abc\x00", b"ab cd", b"~~~~~", b"|NsC1", "é"])
def test_what_the_standard_library_refuses_is_refused(text):
    with pytest.raises(ValueError):
        base64.b85decode(text)
    with pytest.raises(ValueError):
        b85decode(text)
