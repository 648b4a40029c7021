"""Packed entry formats: byte sizes, exact round trips, agreement with the model's format simulation."""

import pytest
import torch

from dsv4.cache.layout import IndexerKeyLayout, LayoutError, MainEntryLayout, e8m0_decode, e8m0_encode
from dsv4.model.quant import FP4_GRID, fp4_round, fp8_round


def _spread(n: int, width: int, block: int, seed: int) -> torch.Tensor:
    # magnitudes spread over many binades across blocks, so the scales differ
    g = torch.Generator().manual_seed(seed)
    binade = torch.randint(-20, 20, (n, width // block), generator=g)
    return torch.randn(n, width, generator=g) * torch.exp2(binade).repeat_interleave(block, 1)


def _kv(n: int, seed: int = 0) -> torch.Tensor:
    return _spread(n, 512, 64, seed)


def _simulated(kv: torch.Tensor) -> torch.Tensor:
    # what the model writes into its cache: FP8 (64-blocks) on the first 448 dims, RoPE dims as BF16
    return torch.cat([fp8_round(kv[:, :448], 64), kv[:, 448:].bfloat16().float()], dim=-1)


def test_sizes_are_the_deployed_ones():
    assert MainEntryLayout().nbytes == 584
    assert IndexerKeyLayout().nbytes == 68
    assert MainEntryLayout().pack(torch.zeros(3, 512)).shape == (3, 584)
    assert IndexerKeyLayout().pack(torch.zeros(2, 5, 128)).shape == (2, 5, 68)


def test_main_entry_pack_equals_model_simulation():
    kv = _kv(64)
    layout = MainEntryLayout()
    packed = layout.pack(kv)
    assert packed.dtype == torch.uint8
    assert torch.equal(layout.unpack(packed), _simulated(kv))


def test_main_entry_round_trip_is_exact_on_representable_values():
    layout = MainEntryLayout()
    sim = _simulated(_kv(64, seed=1))
    assert torch.equal(layout.unpack(layout.pack(sim)), sim)
    # and packing an unpacked entry reproduces the values byte for byte where the scale is determined
    again = layout.pack(layout.unpack(layout.pack(sim)))
    assert torch.equal(layout.unpack(again), sim)


def test_main_entry_byte_positions():
    layout = MainEntryLayout()
    kv = torch.zeros(512)
    kv[0] = 448.0 * 4  # block 0 scale 4 -> FP8 code of 448 (0x7e), scale byte 127 + 2
    kv[448] = 1.5  # BF16 1.5 = 0x3fc0, little-endian
    p = layout.pack(kv)
    assert p[0].item() == 0x7E
    assert (p[448].item(), p[449].item()) == (0xC0, 0x3F)
    assert p[576].item() == 129
    assert p[583].item() == 0
    assert p[577:583].tolist() == [e8m0_encode(torch.tensor(2.0**-22)).item()] * 6  # 1e-4 / 448 -> 2^-22


def test_indexer_key_pack_equals_model_simulation_and_round_trips():
    keys = _spread(40, 128, 32, seed=2)
    layout = IndexerKeyLayout()
    sim = fp4_round(keys, 32)
    assert torch.equal(layout.unpack(layout.pack(keys)), sim)
    assert torch.equal(layout.unpack(layout.pack(sim)), sim)


def test_indexer_key_nibble_order_and_codes():
    key = torch.zeros(128)
    key[0], key[1] = 6.0, -0.5  # scale 1: codes 7 and 8 + 1 = 9
    p = IndexerKeyLayout().pack(key)
    assert p[0].item() == 7 | (9 << 4)
    assert p[64].item() == 127
    values = torch.tensor(FP4_GRID)
    assert torch.equal(IndexerKeyLayout().unpack(IndexerKeyLayout().pack(values.repeat(16)))[:8], values)


def test_e8m0_codes():
    s = torch.exp2(torch.arange(-127, 128).float())
    assert torch.equal(e8m0_encode(s), torch.arange(0, 255).to(torch.uint8))
    assert torch.equal(e8m0_decode(e8m0_encode(s)), s)


def test_wrong_widths_are_named():
    with pytest.raises(LayoutError, match="main KV entry: last dim must be 512"):
        MainEntryLayout().pack(torch.zeros(4, 500))
    with pytest.raises(LayoutError, match="packed indexer key: last dim must be 68"):
        IndexerKeyLayout().unpack(torch.zeros(4, 64, dtype=torch.uint8))
    with pytest.raises(LayoutError, match="block=64"):
        MainEntryLayout(head_dim=500)


def test_model_cache_contents_pack_losslessly():
    # entries the model itself wrote (FP8-simulated nope dims, MXFP4-simulated indexer keys) survive packing;
    # only the float32 RoPE dims pick up BF16 rounding
    from dsv4.model import Transformer, preset
    from dsv4.model.init import init_random_

    model = init_random_(Transformer(preset("test"), torch.float32), seed=3)
    cache = model.new_cache(1, 64)
    model(torch.randint(0, 512, (1, 64), generator=torch.Generator().manual_seed(0)), cache=cache)
    csa = cache.layers[1]
    entries, keys = csa.compressor.entries[0], csa.indexer.entries[0]  # [16,512], [16,128]
    assert entries.abs().sum() > 0 and keys.abs().sum() > 0
    main, idx = MainEntryLayout(), IndexerKeyLayout()
    got = main.unpack(main.pack(entries))
    assert torch.equal(got[:, :448], entries[:, :448])
    assert torch.equal(got[:, 448:], entries[:, 448:].bfloat16().float())
    assert torch.equal(idx.unpack(idx.pack(keys)), keys)
    window = cache.layers[0].window[0]
    assert torch.equal(main.unpack(main.pack(window))[:, :448], window[:, :448])
