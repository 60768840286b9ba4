import copy
import gc
import io

import pytest
import torch

from liteffn import FastFeedForward
from liteffn.ops import _hugemem, _outbuf

HUGE = 2 << 20


def test_large_tensors_are_2mib_aligned_and_small_ones_plain():
    w = _hugemem.empty((4095, 768))
    assert w.shape == (4095, 768) and w.dtype == torch.float32 and w.is_contiguous()
    assert w.data_ptr() % HUGE == 0
    small = _hugemem.empty((3, 5))
    assert small.shape == (3, 5) and small.dtype == torch.float32
    half = _hugemem.empty((1024, 1024), torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.data_ptr() % HUGE == 0
    half.fill_(1.0)
    assert float(half.float().sum()) == 1024 * 1024


def test_a_view_keeps_the_mapping_alive():
    w = _hugemem.empty((_hugemem.MIN_BYTES // 4 // 64 + 1, 64))
    w.copy_(torch.arange(w.numel(), dtype=torch.float32).view(w.shape))
    tail = w[-2:]  # a view: the mapping must outlive the base tensor
    expected = tail.clone()
    del w
    gc.collect()
    _hugemem.empty((4096, 1024)).fill_(-1.0)  # new memory that must not land on the old mapping
    assert torch.equal(tail, expected)


def test_a_large_tree_keeps_its_huge_page_weights_through_load_copy_and_pickle():
    ffn = FastFeedForward(768, depth=11).eval()
    assert ffn.w_in.data_ptr() % HUGE == 0 and ffn.w_out.data_ptr() % HUGE == 0
    other = FastFeedForward(768, depth=11)
    other.load_state_dict(ffn.state_dict())  # in place: still on the aligned mapping
    assert other.w_in.data_ptr() % HUGE == 0
    x = torch.randn(3, 768)
    assert torch.equal(other.eval()(x), ffn(x))
    assert torch.equal(copy.deepcopy(ffn)(x), ffn(x))
    buf = io.BytesIO()
    torch.save(ffn.state_dict(), buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf)["w_out"], ffn.w_out.detach())


def test_huge_page_tensors_cover_their_storage_so_safetensors_saves_them(tmp_path):
    # safetensors (save_pretrained) refuses tensors that do not cover their whole storage
    safetensors_torch = pytest.importorskip("safetensors.torch")
    ffn = FastFeedForward(256, depth=11)  # w_in / w_out of 4 MiB: huge-page backed
    assert ffn.w_in.untyped_storage().nbytes() == ffn.w_in.numel() * 4
    pooled = _outbuf.empty((4096, 1024))  # 16 MiB: from the output pool
    assert pooled.untyped_storage().nbytes() == pooled.numel() * 4
    pooled.fill_(2.0)
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({**ffn.state_dict(), "y": pooled}, str(path))
    loaded = safetensors_torch.load_file(str(path))
    assert torch.equal(loaded["w_out"], ffn.w_out.detach()) and torch.equal(loaded["y"], pooled)
