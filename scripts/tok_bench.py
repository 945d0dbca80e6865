"""
Benchmark BPE training: our rustbpe vs Hugging Face `tokenizers` vs the PyPI `rustbpe` package, same text,
same vocabulary size, same split pattern; prints seconds, MB/s, peak RSS and the ratios, side by side.

    python -m scripts.tok_bench                          # ~100 MB of English, vocab 65536 (the issue's goal)
    python -m scripts.tok_bench --mb 10 --vocab-size 8192     # a quick run
    python -m scripts.tok_bench --setup-pypi             # first create /tmp/rustbpe-pypi-venv with PyPI rustbpe

CPU only. Text: the pretraining shards in <base_dir>/base_data (`python -m nanochat.dataset --local` builds
~45 MB offline; a smaller corpus is cycled to reach --mb, said so in the output), else English text files
found on the machine (/usr/share/doc, /usr/share/common-licenses).

Every trainer runs in its own subprocess: the text is loaded first (not timed), then only the training call
is timed; peak RSS is the subprocess's own high-water mark (VmHWM; ru_maxrss on non-Linux), reported whole
and above the baseline after loading the text.
The PyPI package is also called `rustbpe`, so it runs from its own virtualenv (--pypi-venv). HF tokenizers
needs `pip install tokenizers`; a trainer that is missing is skipped with a note. Take timings on a quiet
machine: other processes on the same cores skew them.
"""
import os
import sys
import glob
import gzip
import json
import time
import argparse
import tempfile
import subprocess

# -----------------------------------------------------------------------------
# arguments

parser = argparse.ArgumentParser(description="Benchmark BPE training throughput and memory: ours vs HF vs PyPI rustbpe")
parser.add_argument("--mb", type=float, default=100.0, help="megabytes (UTF-8) of text to train on")
parser.add_argument("--vocab-size", type=int, default=65536, help="vocabulary size to train (merges = vocab - 256)")
parser.add_argument("--doc-cap", type=int, default=10_000, help="crop each document to this many characters")
parser.add_argument("--trainers", type=str, default="ours,pypi,hf", help="comma list from: ours, pypi, hf")
parser.add_argument("--pypi-venv", type=str, default="/tmp/rustbpe-pypi-venv",
                    help="virtualenv holding the PyPI rustbpe package (skipped when absent)")
parser.add_argument("--setup-pypi", action="store_true",
                    help="create --pypi-venv and `pip install rustbpe` into it before benchmarking")
parser.add_argument("--repeats", type=int, default=1, help="runs per trainer; the fastest is reported")
args = parser.parse_args()

# -----------------------------------------------------------------------------
# the text: shards if present, else English files on this machine


def shard_documents():
    try:
        from nanochat.dataset import iter_documents
        yield from iter_documents("train")
    except (ImportError, FileNotFoundError):
        return


def file_documents():
    roots = ["/usr/share/doc", "/usr/share/common-licenses"]
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            try:
                if path.endswith(".gz"):
                    with gzip.open(path, "rb") as f:
                        data = f.read(1_000_000)
                elif path.endswith((".txt", ".md", ".rst")) or "." not in os.path.basename(path):
                    with open(path, "rb") as f:
                        data = f.read(1_000_000)
                else:
                    continue
                text = data.decode("utf-8")
            except (OSError, UnicodeDecodeError, EOFError):
                continue
            if text.strip():
                yield text


def collect_text(target_bytes):
    """Documents (capped at --doc-cap chars) adding up to target_bytes of UTF-8; cycles a small corpus."""
    source = "shards in <base_dir>/base_data"
    base = list(doc[: args.doc_cap] for doc in _take(shard_documents(), target_bytes))
    if not base:
        source = "text files under /usr/share/doc and /usr/share/common-licenses"
        base = list(doc[: args.doc_cap] for doc in _take(file_documents(), target_bytes))
    if not base:
        raise SystemExit("no text found: build the corpus with `python -m nanochat.dataset --local`")
    docs, total, passes = [], 0, 0
    while total < target_bytes:
        passes += 1
        for doc in base:
            docs.append(doc)
            total += len(doc.encode("utf-8"))
            if total >= target_bytes:
                break
    note = f" (the corpus holds less: cycled through it {passes}x)" if passes > 1 else ""
    return docs, total, source + note


def _take(docs, target_bytes):
    total = 0
    for doc in docs:
        yield doc
        total += len(doc.encode("utf-8"))
        if total >= target_bytes:
            return

# -----------------------------------------------------------------------------
# the per-trainer driver, run as `python -c DRIVER kind text.jsonl vocab_size` in a subprocess

DRIVER = r'''
import sys, json, time, resource, hashlib

def peak_rss_kb():
    # VmHWM: this process's own high-water RSS. ru_maxrss would also count the parent's RSS at fork time,
    # which Linux carries across exec into the child's rusage.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

kind, path, vocab_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, encoding="utf-8") as f:
    docs = [json.loads(line) for line in f]
rss_loaded_kb = peak_rss_kb()
PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
if kind in ("ours", "pypi"):
    import rustbpe
    tok = rustbpe.Tokenizer()
    t0 = time.perf_counter()
    tok.train_from_iterator(iter(docs), vocab_size, pattern=PATTERN)
    seconds = time.perf_counter() - t0
    ranks = tok.get_mergeable_ranks()
    n_vocab = len(ranks)
    digest = hashlib.sha256(repr(sorted(ranks, key=lambda br: br[1])).encode()).hexdigest()[:16]
else:
    from tokenizers import Tokenizer, Regex, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(byte_fallback=False, unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(pattern=Regex(PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, min_frequency=0,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    t0 = time.perf_counter()
    tok.train_from_iterator(docs, trainer)
    seconds = time.perf_counter() - t0
    n_vocab, digest = tok.get_vocab_size(), "-"
print(json.dumps({"seconds": seconds, "rss_loaded_kb": rss_loaded_kb, "peak_rss_kb": peak_rss_kb(),
                  "n_vocab": n_vocab, "digest": digest}))
'''


def pypi_python():
    python = os.path.join(args.pypi_venv, "bin", "python")
    return python if os.path.exists(python) else None


def setup_pypi():
    if not pypi_python():
        print(f"creating {args.pypi_venv} for the PyPI rustbpe package ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", args.pypi_venv], check=True)
    subprocess.run([pypi_python(), "-m", "pip", "install", "-q", "rustbpe"], check=True)


def interpreter_for(kind):
    """(python executable, None) or (None, why it is skipped)."""
    if kind == "pypi":
        py = pypi_python()
        if py is None:
            return None, f"no {args.pypi_venv} (run with --setup-pypi)"
        probe = subprocess.run([py, "-c", "import rustbpe"], capture_output=True, cwd=tempfile.gettempdir())
        return (py, None) if probe.returncode == 0 else (None, f"rustbpe not installed in {args.pypi_venv}")
    module = "rustbpe" if kind == "ours" else "tokenizers"
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    if probe.returncode != 0:
        return None, f"`import {module}` fails here (ours: pip install -e .; hf: pip install tokenizers)"
    return sys.executable, None


def run_trainer(kind, python, text_path):
    """One trainer in a subprocess: its JSON result, with its own peak RSS (KB) measured inside it."""
    env = dict(os.environ)
    cwd = os.getcwd()
    if kind == "pypi":  # it shares our module name: run it from a neutral cwd with our repo off the path
        cwd = tempfile.gettempdir()
        env.pop("PYTHONPATH", None)
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: progress lines can never block the child
        proc = subprocess.run([python, "-c", DRIVER, kind, text_path, str(args.vocab_size)], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=err, text=True)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{kind} trainer failed (exit {proc.returncode}):\n{err.read()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

# -----------------------------------------------------------------------------
# main


if args.setup_pypi:
    setup_pypi()
target = int(args.mb * 1e6)
t0 = time.time()
docs, n_bytes, source = collect_text(target)
print(f"text: {n_bytes / 1e6:.1f} MB in {len(docs):,} documents from {source} ({time.time() - t0:.1f}s to load)")
print(f"vocab size {args.vocab_size}, {os.cpu_count()} CPUs, fastest of {args.repeats} run(s) per trainer")
with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
    for doc in docs:
        f.write(json.dumps(doc) + "\n")
    text_path = f.name
del docs

results = {}
try:
    for kind in [k.strip() for k in args.trainers.split(",") if k.strip()]:
        if kind not in ("ours", "pypi", "hf"):
            raise SystemExit(f"--trainers: unknown trainer {kind!r}; choose from ours, pypi, hf")
        python, why = interpreter_for(kind)
        if python is None:
            print(f"{kind:>5}: skipped: {why}")
            continue
        runs = [run_trainer(kind, python, text_path) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["seconds"])
        best["peak_rss_kb"] = max(r["peak_rss_kb"] for r in runs)
        results[kind] = best
        print(f"{kind:>5}: {best['seconds']:7.2f} s  {n_bytes / 1e6 / best['seconds']:7.2f} MB/s  "
              f"peak RSS {best['peak_rss_kb'] / 1024:7.0f} MB  (+{(best['peak_rss_kb'] - best['rss_loaded_kb']) / 1024:.0f} MB "
              f"over the loaded text)  vocab {best['n_vocab']}", flush=True)
finally:
    os.unlink(text_path)

# -----------------------------------------------------------------------------
# ratios, side by side from this one run

if "ours" in results:
    ours = results["ours"]
    for kind in ("pypi", "hf"):
        if kind in results:
            other = results[kind]
            speed = other["seconds"] / ours["seconds"]
            mem = (ours["peak_rss_kb"] - ours["rss_loaded_kb"]) / max(1, other["peak_rss_kb"] - other["rss_loaded_kb"])
            print(f"ours vs {kind}: {speed:.2f}x the throughput, {ours['peak_rss_kb'] / other['peak_rss_kb']:.2f}x the "
                  f"peak RSS ({mem:.2f}x above the loaded text)")
    if "pypi" in results:
        same = results["pypi"]["digest"] == ours["digest"]
        print(f"ours and PyPI rustbpe learned {'identical' if same else 'different'} ranks "
              f"({'same' if same else 'the tie-break rules differ, or'} tie-break{'' if same else ' the vocab sizes'})")
