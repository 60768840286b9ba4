"""save_pretrained / from_pretrained: same outputs after loading; bad files give clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from _tiny import TINY, main_output, tiny_inputs

from liteffn.config import DenseConfig
from liteffn.convert import CheckpointError, convert_, from_pretrained, record_of, save_pretrained


def _converted(arch="bert", d_ff=8):
    torch.manual_seed(0)
    model = convert_(TINY[arch](), DenseConfig(d_ff=d_ff), lambda b, n: n.endswith(".1"))
    return model.eval()


@torch.no_grad()
def test_round_trip_same_class_same_outputs(arch, tmp_path):
    model = _converted(arch)
    save_pretrained(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "liteffn.json",
        "model.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folders
    loaded = from_pretrained(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    assert record_of(loaded)["sites"] == record_of(model)["sites"]
    inputs = tiny_inputs(arch)
    torch.testing.assert_close(
        main_output(loaded, inputs), main_output(model, inputs), rtol=0, atol=0
    )


def test_save_replaces_existing_directory_atomically(tmp_path):
    a, b = _converted(d_ff=8), _converted(d_ff=4)
    save_pretrained(a, tmp_path / "m")
    save_pretrained(b, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    assert record_of(loaded)["sites"]["encoder.layer.1"]["config"]["d_ff"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_unconverted_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="was not converted"):
        save_pretrained(TINY["bert"](), tmp_path / "m")


@pytest.fixture
def saved(tmp_path):
    return save_pretrained(_converted(), tmp_path / "m")


def test_truncated_weights(saved):
    w = saved / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"expected {len(data)} bytes, got {len(data) // 2}"):
        from_pretrained(saved)


def test_corrupted_weights(saved):
    w = saved / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF  # same size, one byte flipped inside a tensor
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the recorded"):
        from_pretrained(saved)


def test_missing_and_bad_record(saved):
    rec = saved / "liteffn.json"
    text = rec.read_text()
    rec.write_text(text[:40])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        from_pretrained(saved)
    meta = json.loads(text)
    meta["format"] = 99
    rec.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99, this liteffn reads 1"):
        from_pretrained(saved)
    rec.unlink()
    with pytest.raises(CheckpointError, match=r"liteffn\.json is missing"):
        from_pretrained(saved)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        from_pretrained(saved / "nope")


def test_weights_of_another_conversion_are_refused(saved, tmp_path):
    # Weights from a model converted with another d_ff, hash updated so only the shapes disagree.
    other = save_pretrained(_converted(d_ff=4), tmp_path / "other")
    (saved / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    meta = json.loads((saved / "liteffn.json").read_text())
    meta["weights"] = json.loads((other / "liteffn.json").read_text())["weights"]
    (saved / "liteffn.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"intermediate.fc1.bias.*expects \(8,\).*has \(4,\)"):
        from_pretrained(saved)


def test_record_that_does_not_fit_the_model(saved):
    meta = json.loads((saved / "liteffn.json").read_text())
    meta["sites"]["encoder.layer.1"]["d_ff"] = 65
    (saved / "liteffn.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="recorded FFN d_model=32, d_ff=65"):
        from_pretrained(saved)
    meta["sites"]["encoder.layer.7"] = meta["sites"].pop("encoder.layer.1")
    (saved / "liteffn.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"not found in the model: \['encoder.layer.7'\]"):
        from_pretrained(saved)
