"""llama.cpp, the CPU peer to beat, set up from this clone alone and run on the tiny V4 checkpoint.

    peer = LlamaCpp(workdir)      # default: ~/.cache/dsv4/peers/llamacpp-0.3.36
    peer.setup()                  # fetch + verify the source, build llama-bench, write and convert the checkpoint
    peer.prefill(4096, threads=2) / peer.decode(4096, threads=2)   # one llama-bench process each

The source is the llama.cpp tree vendored in the PyPI sdist of llama-cpp-python 0.3.36 (DeepSeek-V4 support:
CSA/HCA compressed caches, the lightning indexer, MXFP4 experts), fetched with pip and checked against a pinned
sha256. `llama-bench` is built with cmake (Release, -march=native, CPU only: ~4-10 min on 2 cores); the
checkpoint is written by `tiny_v4` (dsv4's own writer) and converted by llama.cpp's own converter. Every step is
skipped when its output exists, so a second run only benchmarks. Needs cmake >= 3.14, a C++17 compiler and make.

Torch-free on purpose, and the checkpoint is written in a process of its own: Linux carries a process's peak RSS
across exec, so a llama-bench (or dsv4) started from a process that once held torch and a model would report
that process's peak as its own.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

VERSION = "0.3.36"
REQUIREMENT = f"llama-cpp-python=={VERSION}"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TARGETS = ("llama-bench",)
CMAKE_OPTIONS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_OPENSSL=OFF",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                 "-DLLAMA_BUILD_APP=OFF")
DECODE_TOKENS = 32
BIG_CONTEXT = 65536  # from here a prefill is timed once, without llama-bench's warmup (a second full prefill)


def repetitions(context: int) -> int:
    """How many times a prefill at `context` is timed (llama-bench's -r; dsv4's benchmark repeats as many)."""
    return 1 if context >= BIG_CONTEXT else 2 if context >= 16384 else 3


class PeerError(RuntimeError):
    pass


def default_workdir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dsv4" / "peers" / f"llamacpp-{VERSION}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sdist(path: Path, expected: str = SDIST_SHA256) -> None:
    got = sha256_of(path)
    if got != expected:
        raise PeerError(f"{path}: sha256 {got}, expected {expected} ({REQUIREMENT}'s sdist); delete the file "
                             "to fetch it again")


def fetch_command(dest: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", REQUIREMENT,
            "-d", str(dest)]


def cmake_commands(source: Path, build: Path, jobs: int) -> list[list[str]]:
    """Configure, then build only the targets the benchmark runs."""
    return [["cmake", "-S", str(source), "-B", str(build), *CMAKE_OPTIONS],
            ["cmake", "--build", str(build), "-j", str(jobs), "--target", *TARGETS]]


def bench_command(llama_bench: Path, gguf: Path, what: str, context: int, threads: int) -> list[str]:
    """One llama-bench run, JSON lines out, verbose (the log states the cache sizes). prefill: `context` prompt
    tokens; decode: DECODE_TOKENS tokens after an untimed prefill of `context` (-d)."""
    if what == "prefill":
        reps = repetitions(context)
        args = ["-p", str(context), "-n", "0", "-r", str(reps)] + (["--no-warmup"] if context >= BIG_CONTEXT else [])
    elif what == "decode":
        args = ["-p", "0", "-n", str(DECODE_TOKENS), "-d", str(context), "-r", "5"]
    else:
        raise ValueError(f"what must be 'prefill' or 'decode'; got {what!r}")
    if context <= 0 or threads <= 0:
        raise ValueError(f"context and threads must be positive; got context={context}, threads={threads}")
    return [str(llama_bench), "-m", str(gguf), "-t", str(threads), *args, "-o", "jsonl", "-v"]


_CREATING = re.compile(r"creating\s+(.+?)\s*(?:,|$)")
_KV_SIZE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB")
_STATE_SIZE = re.compile(r"llama_dsv4_comp_state: (\w+) ratio = .*size = +([\d.]+) MiB")


def cache_mib(log: str) -> dict[str, float]:
    """The caches llama.cpp's verbose log says it allocated, MiB by name: each 'creating <cache>' line is followed
    by its 'llama_kv_cache: size = X MiB' line; compressor states state their own size. A cache created twice (a
    second context) counts once."""
    sizes, label = {}, None
    for line in log.splitlines():
        if m := _STATE_SIZE.search(line):
            sizes[f"{m[1]} compressor state"] = float(m[2])
        elif m := _CREATING.search(line):
            label = " ".join(m[1].split())
        elif (m := _KV_SIZE.search(line)) and label:
            sizes[label], label = float(m[1]), None
    return sizes


@dataclass
class LlamaCpp:
    workdir: Path
    jobs: int = 2  # build jobs
    llama_bench: Path | None = None  # an existing build's binary instead of building one
    gguf: Path | None = None  # an existing GGUF instead of converting the tiny checkpoint
    checkpoint: Path | None = None  # the checkpoint (dsv4 format) the GGUF holds; written if missing

    def __post_init__(self):
        self.workdir = Path(self.workdir).expanduser().resolve()
        self.source = self.workdir / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
        self.checkpoint = Path(self.checkpoint) if self.checkpoint else self.workdir / "tiny-v4"
        self.logs = self.workdir / "logs"
        self.llama_bench = Path(self.llama_bench) if self.llama_bench else self.workdir / "build" / "bin" / TARGETS[0]
        self.gguf = Path(self.gguf) if self.gguf else self.workdir / "tiny-v4-f32-mxfp4.gguf"

    def setup(self, log=print) -> None:
        """Every missing piece, in order (each step leaves its output, so it runs once)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        needs_source = not self.source.is_dir() and not (self.llama_bench.is_file() and self.gguf.is_file())
        if needs_source:
            sdist = self.workdir / SDIST
            if not sdist.is_file():
                log(f"fetching {REQUIREMENT} (sdist, ~75 MB)")
                self._run(fetch_command(self.workdir), "fetch")
            verify_sdist(sdist)
            log(f"extracting {sdist.name}")
            partial = self.workdir / "source.partial"  # an interrupted extraction: redone
            shutil.rmtree(partial, ignore_errors=True)
            with tarfile.open(sdist) as tar:
                tar.extractall(partial, filter="data")
            (partial / self.source.parents[1].name).rename(self.source.parents[1])
            partial.rmdir()
        if not self.llama_bench.is_file():
            if shutil.which("cmake") is None:
                raise PeerError("building llama.cpp needs cmake (and a C++17 compiler): apt install cmake g++")
            log(f"building {', '.join(TARGETS)} (~4-10 min on 2 cores; log: {self.logs / 'build.log'})")
            for cmd in cmake_commands(self.source, self.workdir / "build", self.jobs):
                self._run(cmd, "build")
        if not (self.checkpoint / "config.json").is_file():  # dsv4 runs it even when the GGUF is given
            log(f"writing the tiny V4 checkpoint to {self.checkpoint}")
            partial = self.checkpoint.with_name(self.checkpoint.name + ".partial")  # an interrupted write: redone
            shutil.rmtree(partial, ignore_errors=True)
            self._run([sys.executable, str(Path(__file__).with_name("tiny_v4.py")), str(partial)], "checkpoint")
            partial.rename(self.checkpoint)
        if not self.gguf.is_file():
            log(f"converting it with llama.cpp's convert_hf_to_gguf.py to {self.gguf}")
            partial = self.gguf.with_name(self.gguf.name + ".partial")
            self._run([sys.executable, str(Path(__file__).with_name("convert_gguf.py")), str(self.source),
                       str(self.checkpoint), str(partial), "--outtype", "f32"], "convert")
            partial.rename(self.gguf)

    def prefill(self, context: int, threads: int) -> dict:
        return self._bench("prefill", context, threads)

    def decode(self, context: int, threads: int) -> dict:
        return self._bench("decode", context, threads)

    def _bench(self, what: str, context: int, threads: int) -> dict:
        """Runs llama-bench in its own process; its peak RSS is that process's own (wait4)."""
        tag = f"{what}{context}"
        out, err = self.logs / f"{tag}.jsonl", self.logs / f"{tag}.log"
        cmd = bench_command(self.llama_bench, self.gguf, what, context, threads)
        with open(out, "w") as fo, open(err, "w") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise PeerError(f"{' '.join(cmd)} exited with {proc.returncode}: {_tail(err)}")
        result = json.loads([line for line in out.read_text().splitlines() if line.startswith("{")][-1])
        caches = cache_mib(err.read_text(errors="replace"))  # (the log holds the tokenizer's raw bytes)
        row = {"what": what, "ctx": context, "tokens_per_s": result["avg_ts"], "build": result.get("build_commit"),
               "peak_rss_mb": usage.ru_maxrss / 1024, "kv_bytes": sum(caches.values()) * 2**20, "kv_mib": caches}
        if what == "prefill":
            row["seconds"] = result["avg_ns"] / 1e9
        else:
            row["ms_per_token"] = result["avg_ns"] / 1e6 / DECODE_TOKENS
        return row

    def _run(self, cmd: list[str], step: str) -> None:
        log = self.logs / f"{step}.log"
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        if code:
            raise PeerError(f"{step} failed ({' '.join(cmd[:4])} ... exited with {code}): {_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    return f"last lines of {log}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
