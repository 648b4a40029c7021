"""Runs llama.cpp's own `convert_hf_to_gguf.py` on the tiny checkpoint (in its own process: the converter brings
its own `gguf` and `conversion` packages and sets up logging).

One change to the converter: it identifies a tokenizer's pre-tokenizer by hashing how it splits a test text, and
knows only released tokenizers; the tiny checkpoint's tokenizer is a byte-level BPE with the GPT-2 split regex,
so an unknown hash is read as 'gpt-2'.

Usage: python convert_gguf.py LLAMA_CPP_DIR CHECKPOINT_DIR OUT.gguf [--outtype f32]
"""

import argparse
import runpy
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("llama_cpp_dir", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--outtype", default="f32")
    args = parser.parse_args()
    script = args.llama_cpp_dir.resolve() / "convert_hf_to_gguf.py"
    if not script.is_file():
        sys.exit(f"no convert_hf_to_gguf.py in {args.llama_cpp_dir}")
    sys.path[:0] = [str(script.parent / "gguf-py"), str(script.parent)]
    from conversion import base

    known = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return known(self, tokenizer)
        except NotImplementedError:
            base.logger.warning("tiny checkpoint: unknown pre-tokenizer hash, read as 'gpt-2' (byte-level BPE)")
            return "gpt-2"

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [str(script), str(args.checkpoint), "--outfile", str(args.out), "--outtype", args.outtype]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
