"""The infill routes (serve/infill.py) without a browser: a span filled, and bad requests refused."""

from __future__ import annotations

import pytest
import torch
from conftest import PIANO_DIR
from starlette.testclient import TestClient

from musicgpt.model.gpt import GPT, GPTConfig
from musicgpt.serve.app import create_app
from musicgpt.tokenizers import vocab as V
from musicgpt.tokenizers.performance import PerformanceTokenizer

TOK = PerformanceTokenizer()
TINY = dict(
    block_size=96, n_layer=1, n_head=2, n_embd=32, position_encoding="relative", max_relative_distance=64
)


def client_for(vocab_size: int) -> TestClient:
    torch.manual_seed(0)
    app = create_app(GPT(GPTConfig(vocab_size=vocab_size, **TINY)).eval(), TOK, pieces_dir=PIANO_DIR)
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def client():
    with client_for(V.VOCAB_SIZE) as c:
        yield c


def test_a_span_is_filled_and_downloads_as_the_whole_piece(client):
    piece = client.get("/api/infill/pieces/fur-elise.mid").json()
    assert piece["canInfill"] is True and len(piece["notes"]) > 100
    r = client.post(
        "/api/infill", json={"piece": "fur-elise.mid", "start": 4, "end": 5.5, "numSamples": 2, "seed": 1}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["from"], body["to"], len(body["samples"])) == (3.0, 6.5, 2)
    assert all(3.0 < n[2] and n[1] < 6.5 for n in body["samples"][0]["notes"])
    midi = client.get(body["samples"][1]["midi"])
    assert midi.status_code == 200 and midi.content.startswith(b"MThd")
    assert 'filename="fur-elise-infill2.mid"' in midi.headers["content-disposition"]


def test_an_alternative_opens_in_the_attention_view(client):
    r = client.post(
        "/api/infill", json={"piece": "fur-elise.mid", "start": 4, "end": 5.5, "numSamples": 1, "seed": 2}
    )
    sample = r.json()["samples"][0]
    page = client.get(sample["attention"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "fur-elise.mid: alternative 1, attention" in page.text
    assert "the span 4.00-5.50 s filled, read in order" in page.text
    assert client.get(sample["attention"]).text == page.text  # made once, then kept
    missing = client.get(sample["attention"].replace("/1/attention", "/2/attention"))
    assert missing.status_code == 404 and "no infill result" in missing.json()["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"piece": "nope.mid", "start": 1, "end": 2, "numSamples": 1},
            "no bundled piece is called 'nope.mid'",
        ),
        ({"piece": "fur-elise.mid", "start": 2, "end": 2, "numSamples": 1}, "is empty"),
        ({"piece": "fur-elise.mid", "start": 3, "end": 2, "numSamples": 1}, "is reversed"),
        ({"piece": "fur-elise.mid", "start": 1, "end": 9999, "numSamples": 1}, "a span lasts at most 30 s"),
        ({"piece": "fur-elise.mid", "start": 1e5, "end": 1e5 + 1, "numSamples": 1}, "lies outside the piece"),
        (
            {"piece": "fur-elise.mid", "start": 1, "end": 2, "numSamples": 99},
            "numSamples must be an integer from 1 to 8",
        ),
        ({"piece": "fur-elise.mid", "start": "a", "end": 2, "numSamples": 1}, "start must be a number"),
    ],
)
def test_bad_requests_are_one_json_error(client, body, message):
    r = client.post("/api/infill", json=body)
    assert r.status_code == 400 and message in r.json()["error"]


def test_a_model_without_fim_tokens_says_so():
    with client_for(390) as c:
        assert c.get("/api/infill/pieces/fur-elise.mid").json()["canInfill"] is False
        r = c.post("/api/infill", json={"piece": "fur-elise.mid", "start": 1, "end": 2, "numSamples": 1})
        assert r.status_code == 400 and "cannot infill" in r.json()["error"]
        assert c.get("/infill").status_code == 200
