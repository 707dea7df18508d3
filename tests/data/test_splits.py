import pytest

from musicgpt.data.splits import assign_splits, hash_splits
from musicgpt.errors import MusicGPTError


def test_hash_split_is_deterministic_and_covers_every_split():
    paths = [f"piece_{i}.mid" for i in range(20)]
    a = hash_splits(paths, 0.1, 0.1)
    b = hash_splits(list(reversed(paths)), 0.1, 0.1)
    assert a == b
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "validation", "test")}
    assert counts == {"train": 16, "validation": 2, "test": 2}


def test_small_corpora_still_get_a_validation_file():
    split = hash_splits(["a.mid", "b.mid", "c.mid"], 0.1, 0.1)
    assert sorted(split.values()) == ["test", "train", "validation"]
    assert hash_splits(["a.mid", "b.mid"], 0.1, 0.1) == {"a.mid": "train", "b.mid": "train"}


def test_maestro_csv_split_is_used(tmp_path):
    (tmp_path / "maestro-v3.0.0.csv").write_text(
        "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration\n"
        'Bach,"Prelude, BWV 846",train,2004,2004/a.midi,2004/a.wav,10.0\n'
        "Chopin,Etude,validation,2006,2006/b.midi,2006/b.wav,10.0\n"
        "Liszt,Sonata,test,2008,2008/c.midi,2008/c.wav,10.0\n"
    )
    split = assign_splits(tmp_path, ["2004/a.midi", "2006/b.midi", "2008/c.midi", "extra/d.mid"])
    assert split == {
        "2004/a.midi": "train",
        "2006/b.midi": "validation",
        "2008/c.midi": "test",
        "extra/d.mid": "train",
    }


def test_maestro_csv_with_wrong_columns_is_a_clear_error(tmp_path):
    (tmp_path / "maestro-v2.0.0.csv").write_text("name,fold\na,train\n")
    with pytest.raises(MusicGPTError, match="maestro-v2.0.0.csv: expected MAESTRO's columns"):
        assign_splits(tmp_path, ["a"])
