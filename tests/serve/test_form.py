"""Every field of a generation request is checked on the server, with a message that names it."""

from __future__ import annotations

import pytest

from musicgpt.serve.form import FIELDS, BadRequest, GenerationRequest, limits, parse_request


def test_defaults_fill_missing_fields():
    assert parse_request({}) == GenerationRequest(
        prompt_seconds=10.0,
        seconds=10.0,
        temperature=1.0,
        top_p=0.95,
        prompt_cache=1.0,
        grid=1,
        num_samples=2,
        seed=None,
    )
    got = parse_request({"prompt_seconds": " 0 ", "seconds": "5", "temperature": "0", "top_p": "1",
                         "prompt_cache": "0", "grid": "2", "num_samples": "4", "seed": "2147483647"})  # fmt: skip
    assert got == GenerationRequest(0.0, 5.0, 0.0, 1.0, 0.0, 2, 4, 2**31 - 1)
    assert isinstance(got.num_samples, int) and isinstance(got.seed, int)
    assert parse_request({"seed": ""}).seed is None  # an empty box: no seed


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"seconds": "0.5"}, "continuation seconds must be between 1 and 60, got 0.5"),
        ({"seconds": "61"}, "continuation seconds must be between 1 and 60, got 61"),
        ({"prompt_seconds": "-1"}, "prompt seconds must be between 0 and 60, got -1"),
        ({"temperature": "2.5"}, "temperature must be between 0 and 2, got 2.5"),
        ({"top_p": "0"}, "top-p must be between 0.01 and 1, got 0"),
        ({"num_samples": "5"}, "samples must be between 1 and 4, got 5"),
        ({"num_samples": "2.5"}, "samples must be a whole number, got 2.5"),
        ({"seed": "-3"}, "seed must be between 0 and 2147483647, got -3"),
        ({"grid": "5"}, "snap to the prompt's grid must be between 0 and 4, got 5"),
        ({"grid": "0.5"}, "snap to the prompt's grid must be a whole number, got 0.5"),
        ({"temperature": "hot"}, "temperature must be a number, got 'hot'"),
        ({"temperature": "nan"}, "temperature must be a finite number, got 'nan'"),
        ({"seconds": "inf"}, "continuation seconds must be a finite number, got 'inf'"),
        ({"top_p": b"0.5"}, "top-p must be a number, not a file"),
    ],
)
def test_bad_values_are_refused_by_name(form, message):
    with pytest.raises(BadRequest) as e:
        parse_request(form)
    assert str(e.value) == message and e.value.status == 400


def test_limits_for_the_page_are_the_checked_ones():
    page = limits()
    assert list(page) == [f.name for f in FIELDS] == list(GenerationRequest.__dataclass_fields__)
    assert page["num_samples"] == {"label": "samples", "min": 1, "max": 4, "default": 2, "integer": True}
    for name, f in page.items():  # each bound passes, and a step past it does not
        parse_request({name: str(f["min"])})
        parse_request({name: str(f["max"])})
        with pytest.raises(BadRequest):
            parse_request({name: str(f["max"] + 1)})
