"""C++ CPU kernels of the decode step's opaque ops and a few hot loops, built on first use (an Engine on the CPU
enables them; `make` builds them at install).

`dsv4.cache` and `dsv4.model` define their opaque ops in Python (`dsv4::put_rows`, `dsv4::gather_main_entries`,
`dsv4::gather_index_keys`, `dsv4::grouped_linear`): they are the reference, and what a step runs without the
kernels (no C++ compiler, a GPU, a bare model outside an Engine). A compiled step calls its opaque ops from C++
(inductor's cpp_wrapper), and a Python op there pays ~35 us of interpreter a call, about 40 calls a step.
`enable()` builds the SOURCES (torch.utils.cpp_extension, cached under torch's extensions directory: a minute once
per machine, then a load) and from then on `op(name)` answers the C++ op `dsv4_cpu::name`, which computes the same
values bit for bit (tests/kernels compare them; `sinkhorn` those of mHC's batched ops).

Some kernels have no Python op of their own, only the computation they replace, whose products they compute exactly
but sum in their own order (float32 roundoff): `index_scores_packed` (the indexer's decode scores straight from the
packed MXFP4 keys, where the Python path decodes every key and then multiplies), `linear_bf16` (x times a weight
held in BF16 that holds its values exactly: `Linear.compact_`), `indexed_logits` / `indexed_values`
(indexed_attention.cpp: prefill's attention to each query's own CSA entries, read in place from a table of the
distinct ones, where the Python path copies them out per query) and `rms_rows` (rms_rows.cpp: the per-head query
norm in one visit of each row). `top_entries` (top_entries.cpp) is the indexer's top-k in one pass a row: the
entries of `dsv4.model.attention.indexer.ranked`'s rule (equal scores: the lower entry first), which its Python
path takes with a stable sort. Without a C++ compiler (which inductor needs as well) `enable()` warns and the
Python ops stay.
"""

import hashlib
import logging
import os
import platform
import shutil
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)
_lock = threading.Lock()
_state = {"enabled": False, "tried": False}
SOURCES = ("cpu_ops.cpp", "index_scores.cpp", "top_entries.cpp", "indexed_attention.cpp", "rms_rows.cpp")


def enable() -> bool:
    """Builds (or loads) the C++ kernels; True when `op` answers them from now on."""
    with _lock:
        if not _state["tried"]:
            _state["tried"] = True
            try:
                from torch.utils.cpp_extension import load

                _ninja_on_path()
                # -march=native: the build is this machine's (its cache keyed by the CPU's features below).
                # -fopenmp: at::parallel_for is OpenMP in the headers, a serial loop without it; the library it
                # links (libgomp.so.1) is the one torch already loaded, so both share one pool and its thread count
                here = Path(__file__).parent
                load(name=f"dsv4_cpu_ops_{_cpu_key()}_{_sources_key(here)}",
                     sources=[str(here / f) for f in SOURCES],
                     extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
                     is_python_module=False, verbose=False)
                _register_fakes()
                _state["enabled"] = True
            except Exception as e:  # (no compiler, no headers: the Python ops serve, slower)
                log.warning("dsv4 C++ CPU kernels unavailable, the compiled step calls the Python ops: %s", e)
        return _state["enabled"]


def _ninja_on_path():
    """cpp_extension runs `ninja` from PATH; the pip-installed one sits in the environment's bin, which is not on
    PATH when the environment is not activated (`.venv/bin/dsv4 ...`)."""
    if shutil.which("ninja") is None:
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _cpu_key() -> str:
    """A short digest of the CPU's feature flags: a build for one CPU is never loaded on another (a shared home
    directory, a copied cache) where its instructions might not exist."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.machine() + platform.processor()
    return hashlib.sha256(flags.encode()).hexdigest()[:10]


def _sources_key(here: Path) -> str:
    """A digest of the kernels' sources and header: cpp_extension rebuilds on a changed .cpp but not on a changed
    header, so a new header gets a new build of its own."""
    digest = hashlib.sha256()
    for path in sorted([*here.glob("*.cpp"), *here.glob("*.h")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:8]


def op(name: str, on: torch.Tensor | None = None):
    """The C++ op `dsv4_cpu::name` once `enable()` built it, else None (the caller's Python op serves); None as well
    for `on`, a tensor the op would run on, outside the CPU (the kernels are CPU code; the Python ops run anywhere)."""
    if not _state["enabled"] or (on is not None and on.device.type != "cpu"):
        return None
    return getattr(torch.ops.dsv4_cpu, name).default


def _register_fakes():
    """Shapes for tracing (the Python ops' fakes, for the C++ twins)."""

    @torch.library.register_fake("dsv4_cpu::put_rows")
    def _(pool, rows, cols, value):
        return None

    @torch.library.register_fake("dsv4_cpu::gather_main_entries")
    def _(pool, index, head_dim, rope_dim, block):
        return pool.new_empty(*index.shape, *pool.shape[1:-1], head_dim, dtype=torch.float32)

    @torch.library.register_fake("dsv4_cpu::gather_index_keys")
    def _(pool, index, dim, block):
        return pool.new_empty(*index.shape, *pool.shape[1:-1], dim, dtype=torch.float32)

    @torch.library.register_fake("dsv4_cpu::grouped_linear")
    def _(x, weight, groups):
        return x.new_empty(x.size(0), weight.size(1))

    @torch.library.register_fake("dsv4_cpu::linear_bf16")
    def _(x, weight):
        return x.new_empty(x.size(0), weight.size(0))

    @torch.library.register_fake("dsv4_cpu::top_entries")
    def _(scores, counts, k):
        return scores.new_empty(scores.size(0), min(k, scores.size(1)), dtype=torch.long)

    @torch.library.register_fake("dsv4_cpu::rms_rows")
    def _(x, eps):
        return torch.empty_like(x)

    @torch.library.register_fake("dsv4_cpu::indexed_logits")
    def _(q, rows, index):
        return q.new_empty(q.size(0), q.size(1), index.size(1))

    @torch.library.register_fake("dsv4_cpu::indexed_values")
    def _(p, rows, index):
        return p.new_empty(p.size(0), p.size(1), rows.size(1))

    @torch.library.register_fake("dsv4_cpu::index_scores_packed")
    def _(q, weights, pool, index, dim, block):
        per_row = pool[0].numel() // pool.size(-1)
        return q.new_empty(q.size(0), index.size(1) * per_row)
