"""The tiny random-weight DeepSeek-V4 checkpoint the peer benchmarks run: the real layer layout (head_dim 512,
layers [sliding, CSA, HCA, CSA], a hash-routed first layer, 4 hyper-connection streams) at hidden 256 with 8
routed experts and a 1,024-entry vocabulary, no MTP layer.

It is written by dsv4's own checkpoint writer (`dsv4.model.writer`) in DeepSeek's inference layout, which both
dsv4 and llama.cpp's `convert_hf_to_gguf.py` read: routed experts as FP4 (MXFP4: packed E2M1 codes plus an E8M0
scale per 32 inputs; the converter has no path for float experts), every other weight as float. Two additions the
converter needs and dsv4 ignores:

- The BF16 tensors are widened to F32 (exact). The converter keeps a tensor's source dtype, so the GGUF is
  llama.cpp's F32-dense + MXFP4-experts model, the one issue 13's figures were measured on; dsv4 loads the same
  values either way.
- A byte-level BPE tokenizer with merges (llama.cpp refuses a BPE vocabulary without them; the built-in model's
  tokenizer has none), learned from dsv4's word pools. The benchmarks feed token ids, so only its size matters.
"""

import json
import random
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dsv4.encoding import tokens
from dsv4.model import ModelConfig
from dsv4.model.writer import write_checkpoint
from dsv4.train import words

CONFIG = ModelConfig(
    vocab_size=1024, dim=256, moe_inter_dim=128, n_layers=4, n_hash_layers=1, n_mtp_layers=0, n_heads=4,
    n_routed_experts=8, n_activated_experts=2, q_lora_rank=128, o_groups=2, o_lora_rank=64, index_n_heads=4,
    index_head_dim=128, index_topk=64, compress_ratios=(0, 4, 128, 4), dtype="bf16", expert_dtype="fp4",
)


def write_tiny_checkpoint(out: str | Path, seed: int = 0) -> Path:
    """Writes the checkpoint (config.json, model.safetensors, tokenizer files) to directory `out`."""
    out = write_checkpoint(out, config=CONFIG, seed=seed)
    widen_bf16(out / "model.safetensors")
    write_tokenizer(out)
    return out


def widen_bf16(file: Path) -> None:
    tensors = load_file(file)
    save_file({k: t.float() if t.dtype == torch.bfloat16 else t for k, t in tensors.items()}, file,
              metadata={"format": "pt"})


def write_tokenizer(out: Path) -> None:
    """tokenizer.json (byte-level BPE, GPT-2 pre-tokenization, BOS 0 and EOS 1 as config.json says) and the
    tokenizer_config.json that lets transformers' AutoTokenizer, which the converter uses, read it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=CONFIG.vocab_size, special_tokens=[tokens.BOS, tokens.EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    tok.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tokens.BOS, "eos_token": tokens.EOS,
              "add_bos_token": True, "model_max_length": 1 << 20}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")


def _corpus(lines: int = 2000) -> list[str]:
    """Deterministic sentences over dsv4's word pools (enough distinct pairs to fill 1,024 entries)."""
    rng = random.Random(0)
    pool = words.NOUNS + words.KEYS + words.SUBJECTS + words.DIRS
    return [" ".join(rng.choice(pool) for _ in range(rng.randint(4, 12))) + "." for _ in range(lines)]


if __name__ == "__main__":  # python tiny_v4.py OUT_DIR (how the peer set-up runs it: in a process of its own)
    if len(sys.argv) != 2:
        sys.exit("usage: python tiny_v4.py OUT_DIR")
    print(write_tiny_checkpoint(sys.argv[1]))
