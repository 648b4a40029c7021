"""Golden data from DeepSeek's released V4 inference code, for tests/model/test_golden.py.

    .venv/bin/python tests/model/golden/generate.py /path/to/DeepSeek-V4-Flash/inference

The official `model.py` and `convert.py` are imported from that directory (never copied into this repository);
their GPU kernels are replaced by the torch stand-ins of `kernels.py`. For each case below a small checkpoint is
written from a seed by `dsv4.model.writer` in the released layout, converted by the official `convert.py` (FP8
cases: wo_a dequantized to BF16, FP4 experts viewed as float4_e2m1fn_x2) and run by the official `Transformer` on
CPU: a prefill of PREFILL tokens, then DECODE single-token steps on fixed tokens (teacher forcing). Stored as data
(`<case>.safetensors` + `<case>.json`): the seed, config and token ids; each layer's attention input and output
(every call; in FP8 cases also the inputs of wq_b and wo_b, which attention computes and the FP8 GEMM rounds);
the MoE, gate, shared expert and hyper-connection inputs and outputs at ROWS (these are per-token), and those of
the MTP layer's input projections e_proj / h_proj (the MTP layer run on the main streams afterwards); the
compressed entries and indexer keys after the run; the head's input and the logits. The run is then repeated
with the GEMMs and attention summed in another order (`kernels.py`, order="flat"): the largest difference of
the two runs' logits is the official code's own noise floor, stored as `noise_floor`.

How the official code is run, and why:
- Activations in float32 (`torch.set_default_dtype(float32)`; BF16 weights and the BF16 einsum weight wo_a are
  held as float32 values): module outputs then agree to float32 roundoff, so module-by-module checks can be tight.
  `rotate_activation` asserts BF16 input, so it is replaced by the same Hadamard call without the assertion.
- The shared expert's SwiGLU clamp came in the one update of model.py (2b2bebc, 2026-04-27); the first release
  (2b88d47, "# no swiglu_limit") lacks it. On a first-release copy the clamp is set on the built module (recorded
  as `shared_expert_clamp_set`); nothing else differs between the two model.py versions.
- `kernels.py` follows the kernels as fixed in 553034d (2026-06-08), where the in-place FP8 simulation of the KV
  really rounds to FP8.
(Commits of the HF repository deepseek-ai/DeepSeek-V4-Flash, as mirrored with history by yafengge/DeepSeek-V4-Flash.)
"""

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dsv4.model.config import ModelConfig
from dsv4.model.writer import write_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from kernels import hadamard_transform, kernel_module  # noqa: E402  (this folder is not a package)

OUT = Path(__file__).parent
PREFILL, DECODE = 144, 5  # prefill: past the 128-token window and the first HCA block; decode closes a CSA block
ROWS = [0, 1, 2, 3, 37, 64, 100, 127, 128, 129, 143] + list(range(PREFILL, PREFILL + DECODE))
MTP_ROWS = ROWS[:-1]  # the MTP layer predicts from positions that have a next token
SMALL = dict(vocab_size=512, dim=128, moe_inter_dim=128, n_layers=3, n_mtp_layers=1, n_heads=4,
             n_routed_experts=8, n_activated_experts=2, q_lora_rank=128, o_groups=2, o_lora_rank=128,
             index_n_heads=16, index_head_dim=128, index_topk=8)  # 36 CSA entries after the prefill > top-k 8
CASES = {
    # the release format: FP8 weights, FP4 routed experts; HCA first (as V4-Pro), one hash-routed layer
    "fp8_hca_first": (ModelConfig(**SMALL, n_hash_layers=1, compress_ratios=(128, 4, 0, 0), dtype="fp8",
                                  expert_dtype="fp4"), 11),
    # BF16 everywhere; CSA first, two hash-routed layers
    "bf16_csa_first": (ModelConfig(**SMALL, n_hash_layers=2, compress_ratios=(4, 128, 0, 0), dtype="bf16",
                                   expert_dtype=None), 12),
}


def import_official(path: Path, order: str) -> types.ModuleType:
    """A fresh import of the official model.py (its module globals are per model), on the stand-in kernels."""
    sys.modules["kernel"] = kernel_module(order)
    sys.modules["fast_hadamard_transform"] = types.SimpleNamespace(hadamard_transform=hadamard_transform)
    spec = importlib.util.spec_from_file_location(f"official_model_{order}", path / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.rotate_activation = lambda x: hadamard_transform(x, scale=x.size(-1) ** -0.5)
    return module


def convert(path: Path, config: ModelConfig, ckpt: Path, out: Path) -> dict[str, torch.Tensor]:
    """The checkpoint as the official model loads it: FP8 ones through the official convert.py (which expects
    the FP8 release: it dequantizes wo_a from its scale); a BF16 one already has the reference names."""
    if config.dtype == "bf16":
        return load_file(ckpt / "model.safetensors")
    spec = importlib.util.spec_from_file_location("official_convert", path / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(str(ckpt), str(out), config.n_routed_experts, 1, config.expert_dtype)
    return load_file(out / "model0-mp1.safetensors")


def build(module: types.ModuleType, config: ModelConfig, state: dict[str, torch.Tensor], tokens: int):
    fields = {f.name for f in dataclasses.fields(module.ModelArgs)}
    kw = {k: v for k, v in config.to_dict().items() if k in fields}
    dropped = set(config.to_dict()) - fields - {"simulate_kv_quant", "simulate_kv_rope_bf16", "simulate_act_quant"}
    if dropped:
        raise SystemExit(f"config fields the official ModelArgs lacks: {sorted(dropped)}")
    args = module.ModelArgs(**kw, max_batch_size=1, max_seq_len=tokens)
    model = module.Transformer(args)
    missing, unexpected = model.load_state_dict(state, strict=False)
    shared = [k for k in missing if k.startswith("mtp.") and (".embed." in k or ".head." in k)]
    if unexpected or set(missing) - set(shared):
        raise SystemExit(f"checkpoint mismatch: missing {sorted(set(missing) - set(shared))}, unexpected {unexpected}")
    for p in model.parameters():
        if p.dtype == torch.bfloat16:  # float32 activations: BF16 values held in float32 (exact)
            p.data = p.data.float()
    clamp_set = False
    for layer in model.layers:
        if layer.ffn.shared_experts.swiglu_limit != args.swiglu_limit:
            layer.ffn.shared_experts.swiglu_limit, clamp_set = args.swiglu_limit, True
    return model.eval(), clamp_set


class Recorder:
    """Forward hooks on the official modules; tensors per name, one entry per call."""

    def __init__(self, model):
        self.calls: dict[str, list[torch.Tensor]] = {}
        self.handles = []
        for i, layer in enumerate(model.layers):
            self._hook(layer.attn, f"layers.{i}.attn", lambda a, out: (a[0], out))
            self._hook(layer.ffn, f"layers.{i}.ffn", lambda a, out: (a[0], out))
            self._hook(layer.ffn.gate, f"layers.{i}.gate", lambda a, out: (out[0], out[1]), ("weights", "indices"))
            self._hook(layer.ffn.shared_experts, f"layers.{i}.shared", lambda a, out: (a[0], out))
            if layer.attn.compress_ratio == 4:
                self._hook(layer.attn.indexer, f"layers.{i}.indexer", lambda a, out: (out, torch.tensor(a[3])),
                           ("topk", "offset"))
            if layer.attn.wq_b.weight.dtype == torch.float8_e4m3fn:  # the GEMMs whose computed input is rounded
                for gemm in ("wq_b", "wo_b"):
                    self._hook(getattr(layer.attn, gemm), f"layers.{i}.{gemm}", lambda a, out: (a[0],), ("in",))
            self._wrap_hc(layer, i)
        self._hook(model.head, "head", lambda a, out: (a[0][:, -1:], a[0]), ("in", "streams"))

    def _hook(self, module, name, pick, names=("in", "out")):
        def hook(_module, args, output):
            for n, t in zip(names, pick(args, output), strict=True):
                self.calls.setdefault(f"{name}.{n}", []).append(t.detach().clone())
        self.handles.append(module.register_forward_hook(hook))

    def close(self):
        for h in self.handles:
            h.remove()

    def _wrap_hc(self, layer, i):
        pre, post = layer.hc_pre, layer.hc_post
        site = {"n": 0}

        def hc_pre(x, fn, scale, base):
            y, p, c = pre(x, fn, scale, base)
            name = f"layers.{i}.hc_{('attn', 'ffn')[site['n'] % 2]}"
            for n, t in (("x", x), ("y", y), ("post", p), ("comb", c)):
                self.calls.setdefault(f"{name}.{n}", []).append(t.detach().clone())
            return y, p, c

        def hc_post(x, residual, p, c):
            out = post(x, residual, p, c)
            name = f"layers.{i}.hc_{('attn', 'ffn')[site['n'] % 2]}"
            site["n"] += 1
            for n, t in (("sub_out", x), ("out", out)):
                self.calls.setdefault(f"{name}.{n}", []).append(t.detach().clone())
            return out

        layer.hc_pre, layer.hc_post = hc_pre, hc_post


def run(model, ids: torch.Tensor) -> torch.Tensor:
    """Prefill, then the decode steps on the fixed ids -> logits [DECODE + 1, vocab]."""
    with torch.inference_mode():
        logits = [model(ids[:, :PREFILL], 0)]
        logits += [model(ids[:, p:p + 1], p) for p in range(PREFILL, PREFILL + DECODE)]
    return torch.cat(logits)


def run_mtp(model, ids: torch.Tensor, h: torch.Tensor) -> dict[str, torch.Tensor]:
    """The official MTP layer on the main run's final streams h [1,T,hc,d] and the tokens that follow them (the
    prefill, then one position at a time) -> its input projections' inputs and outputs at MTP_ROWS."""
    mtp, calls, t = model.mtp[0], {}, h.size(1) - 1  # positions with a next token
    for name in ("e_proj", "h_proj"):
        def hook(_module, args, out, name=name):
            calls.setdefault(f"mtp.{name}.in", []).append(args[0].flatten(0, 1).clone())
            calls.setdefault(f"mtp.{name}.out", []).append(out.flatten(0, 1).clone())
        getattr(mtp, name).register_forward_hook(hook)
    with torch.inference_mode():
        mtp(h[:, :PREFILL], 0, ids[:, 1:PREFILL + 1])
        for p in range(PREFILL, t):
            mtp(h[:, p:p + 1], p, ids[:, p + 1:p + 2])
    rows = torch.tensor(MTP_ROWS)
    return {"mtp.h": h[0, rows].contiguous()} | {k: torch.cat(v)[rows].contiguous() for k, v in calls.items()}


def tensors(model, rec: Recorder, config: ModelConfig) -> dict[str, torch.Tensor]:
    """The recorded calls as data: per-call [b,s,...] joined along s; per-token modules at ROWS only."""
    rows = torch.tensor(ROWS)
    out = {}
    for name, calls in rec.calls.items():
        if name.endswith(".offset") or name == "head.streams":
            continue
        if name.endswith(".topk"):  # entry numbers: the official indices carry the window's offset, -1 = none
            offsets = rec.calls[name.replace(".topk", ".offset")]
            entries = [torch.where(t >= 0, t - int(o), -1)[0] for t, o in zip(calls, offsets, strict=True)]
            out[name] = torch.cat(entries).int()  # [PREFILL + DECODE, k]
            continue
        joined = torch.cat([t.flatten(0, 1) if t.dim() >= 3 else t for t in calls])  # [b=1,s,...] -> [s,...]
        per_token = not any(part in name for part in (".attn.", ".wq_b.", ".wo_b.", "head."))
        out[name] = joined[rows] if per_token else joined
    for i, layer in enumerate(model.layers):
        ratio = config.compress_ratio(i)
        if ratio:
            n = (PREFILL + DECODE) // ratio
            out[f"layers.{i}.entries"] = layer.attn.kv_cache[0, config.window_size:config.window_size + n].clone()
        if ratio == 4:
            out[f"layers.{i}.index_keys"] = layer.attn.indexer.kv_cache[0, :n].clone()
    return {k: v.contiguous() for k, v in out.items()}


def generate(path: Path, name: str, config: ModelConfig, seed: int, tmp: Path, out: Path = OUT,
             source: str = "") -> None:
    torch.set_default_dtype(torch.float32)
    ckpt = write_checkpoint(tmp / name / "dsv4", config=config, seed=seed)
    state = convert(path, config, ckpt, tmp / name / "official")
    ids = torch.randint(0, config.vocab_size, (1, PREFILL + DECODE), generator=torch.Generator().manual_seed(seed))
    model, clamp_set = build(import_official(path, "kernel"), config, state, PREFILL + DECODE)
    rec = Recorder(model)
    logits = run(model, ids)
    rec.close()
    data = tensors(model, rec, config)
    data.update(run_mtp(model, ids, torch.cat(rec.calls["head.streams"], dim=1)))
    flat_model, _ = build(import_official(path, "flat"), config, state, PREFILL + DECODE)
    flat = run(flat_model, ids)
    data.update(logits=logits, logits_flat=flat, ids=ids[0].int())
    save_file(data, out / f"{name}.safetensors")
    meta = {
        "case": name, "seed": seed, "config": config.to_dict(), "prefill": PREFILL, "decode": DECODE, "rows": ROWS,
        "mtp_rows": MTP_ROWS,
        "noise_floor": float((logits - flat).abs().max()),
        "weights_sum": float(sum(t.double().abs().sum() for t in load_file(ckpt / "model.safetensors").values()
                                 if t.is_floating_point() and t.element_size() > 1)),
        "shared_expert_clamp_set": clamp_set,
        "official": {"source": source} | {f"{f} sha256": hashlib.sha256((path / f).read_bytes()).hexdigest()
                                          for f in ("model.py", "convert.py")},
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: noise floor {meta['noise_floor']:.4g}, {sum(t.numel() * t.element_size() for t in data.values())}"
          f" bytes, logits max {logits.abs().max():.3g}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("official", type=Path, help="the inference/ folder of DeepSeek's V4 release")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="only these cases")
    parser.add_argument("--source", default="", help="where the official code came from (repository@commit)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the data goes (default {OUT})")
    args = parser.parse_args(argv)
    for f in ("model.py", "convert.py"):
        if not (args.official / f).is_file():
            raise SystemExit(f"{args.official / f} not found: pass the release's inference/ folder")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.case or CASES:
            config, seed = CASES[name]
            generate(args.official, name, config, seed, Path(tmp), args.out, args.source)


if __name__ == "__main__":
    main()
