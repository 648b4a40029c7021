"""The llama.cpp peer's set-up logic, without fetching or building anything: checksum, commands, log parsing,
the steps an existing build skips, the checkpoint's formats."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmarks.peers import llamacpp, tiny_v4
from benchmarks.peers.llamacpp import LlamaCpp, PeerError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer


def test_verify_sdist_accepts_the_pinned_digest_and_names_both_on_a_mismatch(tmp_path):
    sdist = tmp_path / llamacpp.SDIST
    sdist.write_bytes(b"not the sdist")
    llamacpp.verify_sdist(sdist, hashlib.sha256(b"not the sdist").hexdigest())
    with pytest.raises(PeerError) as err:
        llamacpp.verify_sdist(sdist)
    assert llamacpp.SDIST_SHA256 in str(err.value) and hashlib.sha256(b"not the sdist").hexdigest() in str(err.value)


def test_setup_refuses_a_tampered_sdist_before_extracting_it(tmp_path, monkeypatch):
    (tmp_path / llamacpp.SDIST).write_bytes(b"tampered")
    monkeypatch.setattr(llamacpp.tarfile, "open", lambda *a, **k: pytest.fail("extracted an unverified archive"))
    with pytest.raises(PeerError, match="sha256"):
        LlamaCpp(tmp_path).setup(log=lambda msg: None)


def test_an_existing_build_gguf_and_checkpoint_skip_fetch_build_and_convert(tmp_path, monkeypatch):
    bench, gguf, ckpt = tmp_path / "llama-bench", tmp_path / "m.gguf", tmp_path / "ckpt"
    bench.write_text("")
    gguf.write_text("")
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a[0]}"))
    peer = LlamaCpp(tmp_path / "work", llama_bench=bench, gguf=gguf, checkpoint=ckpt)
    peer.setup(log=lambda msg: None)
    assert (peer.llama_bench, peer.gguf, peer.checkpoint) == (bench, gguf, ckpt)
    assert not (tmp_path / "work" / llamacpp.SDIST).exists()


def test_commands(tmp_path):
    configure, build = llamacpp.cmake_commands(tmp_path / "src", tmp_path / "build", jobs=2)
    assert configure[:5] == ["cmake", "-S", str(tmp_path / "src"), "-B", str(tmp_path / "build")]
    assert "-DCMAKE_BUILD_TYPE=Release" in configure and "-DGGML_NATIVE=ON" in configure
    assert build == ["cmake", "--build", str(tmp_path / "build"), "-j", "2", "--target", "llama-bench"]
    fetch = llamacpp.fetch_command(tmp_path)
    assert fetch[-5:] == ["--no-binary", ":all:", "llama-cpp-python==0.3.36", "-d", str(tmp_path)]
    assert "--no-deps" in fetch

    def args(*a):
        return llamacpp.bench_command(tmp_path / "llama-bench", tmp_path / "m.gguf", *a, threads=2)[5:]

    assert args("prefill", 4096) == ["-p", "4096", "-n", "0", "-r", "3", "-o", "jsonl", "-v"]
    assert args("prefill", 65536) == ["-p", "65536", "-n", "0", "-r", "1", "--no-warmup", "-o", "jsonl", "-v"]
    assert args("decode", 16384) == ["-p", "0", "-n", "32", "-d", "16384", "-r", "5", "-o", "jsonl", "-v"]
    with pytest.raises(ValueError, match="prefill"):
        args("generate", 4096)
    with pytest.raises(ValueError, match="context"):
        args("decode", 0)


LOG = """\
llama_kv_cache_dsv4: creating DSV4 raw KV cache
llama_kv_cache_iswa: creating non-SWA KV cache, size = 1024 cells
llama_kv_cache: size =    0.00 MiB (  1024 cells,   0 layers,  1/1 seqs), K (f16):    0.00 MiB, V (f16):    0.00 MiB
llama_kv_cache_iswa: creating     SWA KV cache, size = 768 cells
llama_kv_cache:        CPU KV buffer size =     3.00 MiB
llama_kv_cache: size =    3.00 MiB (   768 cells,   4 layers,  1/1 seqs), K (f16):    3.00 MiB, V (f16):    0.00 MiB
llama_kv_cache_dsv4: creating DSV4 CSA compressed KV cache, size = 256 cells
llama_kv_cache:        CPU KV buffer size =     0.50 MiB
llama_kv_cache: size =    0.50 MiB (   256 cells,   2 layers,  1/1 seqs), K (f16):    0.50 MiB, V (f16):    0.00 MiB
llama_kv_cache_dsv4: creating DSV4 CSA compressor state
llama_dsv4_comp_state: layer   1: dev = CPU
llama_dsv4_comp_state:        CPU DSV4 csa state buffer size =     0.12 MiB
llama_dsv4_comp_state: csa ratio = 4, state = 8 x 1024, streams = 1, rs_seq = 0, layers = 2, size =    0.12 MiB
"""


def test_cache_mib_sums_each_cache_once():
    sizes = llamacpp.cache_mib(LOG + LOG)  # a second context: the same caches again
    assert sizes == {"non-SWA KV cache": 0.0, "SWA KV cache": 3.0, "DSV4 CSA compressed KV cache": 0.5,
                     "csa compressor state": 0.12}


def test_widen_bf16_keeps_values_and_leaves_other_dtypes(tmp_path):
    file = tmp_path / "model.safetensors"
    w, q = torch.randn(4, 8).bfloat16(), torch.randint(-8, 8, (4, 4), dtype=torch.int8)
    save_file({"w": w, "q": q, "s": torch.ones(4, 1, dtype=torch.float8_e8m0fnu)}, file)
    tiny_v4.widen_bf16(file)
    out = load_file(file)
    assert out["w"].dtype == torch.float32 and torch.equal(out["w"], w.float())
    assert (out["q"].dtype, out["s"].dtype) == (torch.int8, torch.float8_e8m0fnu)


def test_tokenizer_is_a_bpe_with_merges_and_the_configs_special_ids(tmp_path):
    tiny_v4.write_tokenizer(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "BPE" and spec["model"]["merges"]  # llama.cpp refuses a BPE without merges
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.get_vocab_size() <= tiny_v4.CONFIG.vocab_size
    assert tok.decode(tok.encode("a lantern by the river").ids) == "a lantern by the river"
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert [tok.token_to_id(config["bos_token"]), tok.token_to_id(config["eos_token"])] == [0, 1]


def test_tiny_checkpoint_loads_in_dsv4_with_float_dense_and_fp4_experts(tmp_path):
    from dsv4.model.checkpoint import load_model

    out = tiny_v4.write_tiny_checkpoint(tmp_path / "ckpt")
    tensors = load_file(out / "model.safetensors")
    assert {str(t.dtype) for k, t in tensors.items() if ".experts." not in k and "tid2eid" not in k} == \
        {"torch.float32"}
    assert tensors["layers.1.ffn.experts.0.w1.weight"].dtype == torch.int8
    assert load_model(out, dtype=torch.float32).config == tiny_v4.CONFIG


def test_the_setup_module_keeps_torch_out_of_the_benchmarks_process():
    """The peak RSS a child reports includes its parent's peak at exec: the parent must stay small."""
    code = "import sys; import benchmarks.peers.llamacpp; print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.strip() == "False"
