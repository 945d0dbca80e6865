"""
Tests of the Rust BPE trainer (rustbpe/) against the pure-Python reference in tests/bpe_reference.py.

    python -m pytest tests/test_rustbpe.py -q

Needs the extension built: `source scripts/cargo_source.sh && pip install -e .`
(Rust-side unit tests of the pre-tokenizer: `cargo test --release`, see rustbpe/src/pretok.rs.)
"""
import glob
import hashlib
import os
import random
import shutil
import subprocess
import sys
import unicodedata

import pytest

rustbpe = pytest.importorskip("rustbpe")
if not hasattr(rustbpe, "Tokenizer"):  # the rustbpe/ crate dir seen as a namespace package: not built
    pytest.fail("rustbpe is not built: run `source scripts/cargo_source.sh && pip install -e .`", pytrace=False)

from tests.bpe_reference import DEFAULT_PATTERN, decode_bpe, encode_bpe, split_chunks, train_bpe

# -----------------------------------------------------------------------------
# corpora: small, deterministic, each stressing something different


def _assigned(lo, hi):
    """Code points in [lo, hi] that Unicode 14 (Python 3.11's unicodedata, the version of rustbpe's tables)
    assigns, minus surrogates: the regex engines agree on those."""
    return [chr(c) for c in range(lo, hi + 1) if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co")]


def _random_unicode(rng, n):
    pools = [_assigned(0x20, 0x24F), _assigned(0x370, 0x4FF), _assigned(0x600, 0x6FF), _assigned(0x900, 0x97F),
             _assigned(0x2000, 0x206F), _assigned(0x3040, 0x30FF), [" ", " ", "\n", "'", "\t"]]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


def _corpora():
    rng = random.Random(1234)
    words = "the of and to in is that it was for on are as with his they at be this from".split()
    english = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) + rng.choice([".", "!", "?\n", "'s"])
               for _ in range(150)]
    emoji = ["".join(rng.choice(["👋", "👋🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "😀", " ", "!", "ok"]) for _ in range(30)) for _ in range(60)]
    cjk = ["".join(rng.choice("日本語の文章を書きます。中文句子，한국어 문장입니다 ") for _ in range(40)) for _ in range(60)]
    spaces = ["".join(rng.choice([" ", "  ", "\t", "\n", "\r\n", "    ", "x", "y z", "\u00a0", "\u3000"])
                      for _ in range(40)) for _ in range(60)]
    digits = [" ".join(str(rng.randint(0, 10 ** rng.randint(1, 9))) for _ in range(12)) + " ١٢٣ ½ ²" for _ in range(60)]
    code = ["def f%d(x, y):\n    return x[%d] + y * %d  # it's\n\tif x != y: print('%s')\n" % (i, i, i * 7, w)
            for i, w in enumerate(rng.choice(words) for _ in range(60))]
    random_u = [_random_unicode(rng, 60) for _ in range(60)]
    mixed = english[:30] + emoji[:10] + cjk[:10] + spaces[:10] + digits[:10] + code[:10] + random_u[:10]
    return {"english": english, "emoji": emoji, "cjk": cjk, "spaces": spaces, "digits": digits, "code": code,
            "random_unicode": random_u, "mixed": mixed}


CORPORA = _corpora()


def train_rust(texts, vocab_size, **kwargs):
    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(texts), vocab_size, **kwargs)
    return tok


def ranks_dict(tok):
    return {b: r for b, r in tok.get_mergeable_ranks()}

# -----------------------------------------------------------------------------
# training equals the reference, merge for merge


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_merges_match_reference(name):
    texts = CORPORA[name]
    tok = train_rust(texts, 256 + 120)
    ref_merges, ref_ranks = train_bpe(texts, 256 + 120)
    assert tok.get_merges() == ref_merges
    ranks = tok.get_mergeable_ranks()
    assert [r for _, r in ranks] == list(range(len(ranks)))
    assert ranks[:256] == [(bytes([i]), i) for i in range(256)]
    assert dict(ranks) == ref_ranks


def test_ties_broken_by_smallest_pair():
    # "ab" and "cd" and "ef" all occur twice: the smallest (left, right) ids, (97, 98), must win first,
    # then (99, 100), then (101, 102), whatever the order of the text.
    for texts in (["ef cd ab", "ab cd ef"], ["cd", "ef", "ab", "ef", "cd", "ab"]):
        tok = train_rust(texts, 259, pattern=r"\S+")
        assert tok.get_merges() == [(97, 98), (99, 100), (101, 102)]
        assert train_bpe(texts, 259, pattern=r"\S+")[0] == tok.get_merges()


def test_custom_pattern_matches_reference():
    pattern = r"\S+|\s+"
    texts = CORPORA["code"] + CORPORA["english"][:40]
    tok = train_rust(texts, 256 + 150, pattern=pattern)
    assert tok.get_pattern() == pattern
    assert tok.get_merges() == train_bpe(texts, 256 + 150, pattern=pattern)[0]


def test_buffer_size_does_not_matter():
    texts = CORPORA["mixed"]
    a = train_rust(texts, 400, buffer_size=1).get_merges()
    b = train_rust(texts, 400, buffer_size=7).get_merges()
    c = train_rust(texts, 400).get_merges()
    assert a == b == c


def test_runs_out_of_pairs():
    # "aaaa" has 2 possible merges (aa, aaaa); asking for more stops early with a valid, smaller vocab
    tok = train_rust(["aaaa"], 1000)
    assert [b for b, _ in tok.get_mergeable_ranks()[256:]] == [b"aa", b"aaaa"]


def test_thread_count_independence():
    # rayon's global pool is sized once per process, so each thread count runs in its own subprocess
    driver = (
        "import sys, hashlib, rustbpe\n"
        "sys.path.insert(0, %r)\n"
        "from tests.test_rustbpe import CORPORA\n"
        "texts = [t for name in sorted(CORPORA) for t in CORPORA[name]] * 3\n"
        "tok = rustbpe.Tokenizer()\n"
        "tok.train_from_iterator(iter(texts), 1024, buffer_size=50)\n"
        "print(hashlib.sha256(repr(tok.get_mergeable_ranks()).encode()).hexdigest())\n"
    ) % os.getcwd()
    digests = []
    for threads in ("1", "2", "3"):
        env = dict(os.environ, RAYON_NUM_THREADS=threads)
        out = subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        digests.append(out.stdout.strip())
    texts = [t for name in sorted(CORPORA) for t in CORPORA[name]] * 3
    here = hashlib.sha256(repr(train_rust(texts, 1024).get_mergeable_ranks()).encode()).hexdigest()
    assert digests == [here] * 3

# -----------------------------------------------------------------------------
# encoding: Rust reference encoder == Python reference == tiktoken; round trip


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_encode_matches_reference_and_tiktoken(name):
    tiktoken = pytest.importorskip("tiktoken")
    texts = CORPORA[name]
    tok = train_rust(texts, 256 + 200)
    ranks = ranks_dict(tok)
    enc = tiktoken.Encoding(name="test", pat_str=tok.get_pattern(), mergeable_ranks=ranks, special_tokens={})
    # held-out text from a different seed, plus the training text itself
    probe = texts[:20] + [t[::-1] for t in texts[20:30]] + _corpora_probe()
    for text in probe:
        ids = tok.encode(text)
        assert ids == encode_bpe(text, ranks), text
        assert ids == enc.encode_ordinary(text), text
        assert decode_bpe(ids, ranks) == text
        assert enc.decode(ids) == text


def _corpora_probe():
    rng = random.Random(99)
    return [_random_unicode(rng, 80) for _ in range(10)] + ["", " ", "\n\n\n", "it's 12345 o'clock 👋🏽 日本"]

# -----------------------------------------------------------------------------
# the hand-written pre-tokenizer == the regex


def _adversarial_strings(n, seed):
    rng = random.Random(seed)
    alphabet = list("'sSdDmMtTlLvVeErRſK \t\n\r\x0b\x0c\u00a0\u0085\u2028\u3000\u200b09٣²½ⅷaZéß日本한👋🏽.,!?-_()\"#$%&*+/<=>@\\^`|~"
                    "\u0300\u200d\ufeff")
    out = []
    for _ in range(n):
        k = rng.randint(0, 30)
        out.append("".join(rng.choice(alphabet) for _ in range(k)))
    return out


def test_default_pattern_is_the_reference_pattern():
    assert rustbpe.DEFAULT_PATTERN == DEFAULT_PATTERN
    assert rustbpe.Tokenizer().get_pattern() == DEFAULT_PATTERN


def test_pretokenizer_equals_regex():
    texts = _adversarial_strings(3000, seed=7) + [t for c in CORPORA.values() for t in c]
    for text in texts:
        fast = rustbpe.split_text(text)
        assert fast == rustbpe.split_text(text, force_regex=True), repr(text)  # fancy-regex, same tables
        assert fast == split_chunks(text), repr(text)  # Python's `regex` module, an independent engine
        assert "".join(fast) == text

# -----------------------------------------------------------------------------
# bad input: clear Python exceptions, never a panic


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="vocab_size must be at least 256"):
        train_rust(["hello"], 255)
    with pytest.raises(ValueError, match="vocab_size"):
        train_rust(["hello"], -1)
    with pytest.raises(ValueError, match="too large"):
        train_rust(["hello"], 2**40)


def test_invalid_pattern_named():
    with pytest.raises(ValueError, match=r"invalid split pattern.*\(\[a-"):
        train_rust(["hello"], 300, pattern="([a-")
    with pytest.raises(ValueError, match="invalid split pattern"):
        rustbpe.split_text("x", pattern="(?<")


def test_non_str_item_names_its_type():
    with pytest.raises(TypeError, match="bytes"):
        train_rust(["ok", b"not text"], 300)
    with pytest.raises(TypeError, match="int"):
        train_rust(["ok"] * 10 + [3], 300, buffer_size=4)


def test_unencodable_str_raises():
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate has no UTF-8 form
        train_rust(["fine", "\ud800"], 300)


def test_iterator_exception_propagates():
    class Boom(Exception):
        pass

    def gen():
        yield "fine text"
        raise Boom("disk on fire")

    with pytest.raises(Boom, match="disk on fire"):
        train_rust(gen(), 300)


def test_ctrl_c_interrupts_training():
    import signal
    import threading

    fired = threading.Event()

    def interrupt():
        fired.set()
        os.kill(os.getpid(), signal.SIGINT)

    def docs():  # endless until the signal, then a bounded tail: a missing signal check fails, never hangs
        after = 0  # (counted in documents, not seconds: a paused or loaded machine must not end it early)
        while after < 100_000:
            after += fired.is_set()
            yield "some text " * 100

    # Python's own Ctrl-C handler, whatever an earlier test or library left installed (the full suite on a
    # fresh clone saw no KeyboardInterrupt while this file alone always did)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            train_rust(docs(), 300)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


def test_not_an_iterable():
    with pytest.raises(TypeError):
        rustbpe.Tokenizer().train_from_iterator(42, 300)


def test_bad_buffer_size():
    with pytest.raises(ValueError, match="buffer_size"):
        train_rust(["x"], 300, buffer_size=0)
    assert train_rust(["ab ab"], 257, buffer_size=10**15).get_merges() == [(97, 98)]  # no giant allocation


def test_empty_input_gives_byte_tokenizer():
    for texts in ([], [""], ["", ""]):
        tok = train_rust(texts, 1000)
        assert tok.get_mergeable_ranks() == [(bytes([i]), i) for i in range(256)]
        assert tok.encode("hé") == list("hé".encode())


def test_untrained_tokenizer_encodes_bytes():
    assert rustbpe.Tokenizer().encode("hi 👋") == list("hi 👋".encode())

# -----------------------------------------------------------------------------
# logging: progress on long trains, silence on small ones


def test_progress_logging(capfd):
    train_rust(CORPORA["english"], 300)
    assert "rustbpe" not in capfd.readouterr().err
    train_rust(CORPORA["english"], 8192)  # runs out of pairs long before 8192, but logs as a big train
    err = capfd.readouterr().err
    assert "rustbpe: read" in err and "rustbpe: done" in err

# -----------------------------------------------------------------------------
# the stable ABI: the one built extension imports on every CPython 3.10 .. 3.13 we can find


def _extension_path():
    path = getattr(rustbpe, "__file__", None) or ""
    if path.endswith(".so"):
        return path
    # maturin installs a package: rustbpe/__init__.py re-exporting rustbpe/rustbpe*.so
    hits = glob.glob(os.path.join(os.path.dirname(path), "rustbpe*.so"))
    assert hits, f"no rustbpe*.so next to {path}"
    return hits[0]


def _find_python(minor):
    for cand in sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}*/bin/python3.{minor}"))):
        return cand
    return shutil.which(f"python3.{minor}")


@pytest.mark.parametrize("minor", [10, 11, 12, 13])
def test_abi3_imports_on_other_pythons(minor, tmp_path):
    so = _extension_path()
    assert so.endswith(".abi3.so"), f"{so} is not a stable-ABI build; pyo3 needs the abi3-py310 feature"
    python = _find_python(minor)
    if python is None:
        pytest.skip(f"no python3.{minor} interpreter on this machine")
    shutil.copy(so, tmp_path / "rustbpe.abi3.so")
    code = ("import sys, rustbpe; t = rustbpe.Tokenizer(); t.train_from_iterator(iter(['ab ab ab cd']), 258); "
            "print(sys.version_info[:2], t.get_mergeable_ranks()[256:], t.encode('ab'))")
    out = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"(3, {minor}) [(b'ab', 256), (b' ab', 257)] [256]"

# -----------------------------------------------------------------------------
# packaging: `pip install -e .` makes the extension and the pure-Python packages importable from anywhere


def test_packages_importable_outside_the_repo(tmp_path):
    code = "import rustbpe, nanochat, tasks, scripts; print(rustbpe.Tokenizer.__name__, nanochat.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, f"run `pip install -e .` from the repo root: {out.stderr[-500:]}"
    name, nanochat_file = out.stdout.split()
    assert name == "Tokenizer" and nanochat_file.endswith(os.path.join("nanochat", "__init__.py"))
