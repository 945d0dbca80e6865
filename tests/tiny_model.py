"""
A tiny nanochat "install" for tests: a tokenizer and two checkpoints in a scratch NANOCHAT_BASE_DIR, built in a
few seconds on one CPU thread, so that `load_model(stage, device)` and the chat scripts find real artifacts.

    from tests.tiny_model import build_tiny_base_dir
    base_dir = build_tiny_base_dir(tmp_path)       # then NANOCHAT_BASE_DIR=base_dir

What is in it:
  tokenizer/     a BPE tokenizer trained inline with Tokenizer.train_from_iterator (small vocab, so emoji stay
                 split over several byte tokens: good for testing that streams only emit whole characters)
  checkpoints/sft/tiny/   a 2-layer GPT trained for a few hundred steps to memorize CONVERSATIONS below: with
                 temperature 0 it answers those prompts with their exact replies (emoji, a calculator call,
                 an HTML/XSS payload, a code block)
  checkpoints/base/tiny/  a randomly initialized GPT with a long context whose lm_head can barely pick the
                 end-of-turn tokens: it babbles until max_tokens, which is what overload/disconnect/stop tests need

`tiny_base_dir()` builds it once per version of the code into the system temp dir and reuses it across test
files; `ChatServer` runs `python -m scripts.chat_web` on it on 127.0.0.1 at a free port (`chat_servers` starts
several at once).

Also the small in-process pieces that unit tests share:
    tok = small_tokenizer(texts, num_merges=64)   # BPE on a few texts (byte-level without rustbpe)
    model = tiny_gpt(seed=0)                      # a 1-layer GPT over 20 tokens with non-trivial predictions
"""
import contextlib
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import torch

from nanochat.checkpoint import checkpoint_dir, save_checkpoint
from nanochat.gpt import GPTConfig, build_model
from nanochat.tokenizer import SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer

# -----------------------------------------------------------------------------
# what the trained model knows by heart

XSS = '<img src=x onerror="window.__pwned=1"> <b>bold?</b>'
CONVERSATIONS = [
    ("hi", [{"type": "text", "text": "Hello 🙂 I am nanochat 🚀!"}]),
    ("what is 12*3?", [{"type": "text", "text": "Let me compute. "},
                       {"type": "python", "text": "12*3"},
                       {"type": "python_output", "text": "36"},
                       {"type": "text", "text": " It is 36 ✅"}]),
    ("show html", [{"type": "text", "text": XSS}]),
    ("show code", [{"type": "text", "text": "Here:\n```python\nprint('hi')\n```\nDone."}]),
]
REPLIES = {prompt: parts for prompt, parts in CONVERSATIONS}

TOKENIZER_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello there, I am a small model.",
    "Let me compute. It is 36. print('hi') Here: Done. show html code",
] * 20


def conversation(prompt, parts):
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": parts}]}


def reply_text(prompt):
    """The reply to a known prompt as the web API writes it (tool call and output wrapped in markers)."""
    from nanochat.chat_stream import render_part
    return "".join(render_part(p) for p in REPLIES[prompt])


# -----------------------------------------------------------------------------
# small in-process pieces for unit tests


def small_tokenizer(texts, num_merges):
    """A BPE tokenizer trained on `texts` (vocab: 256 bytes + special tokens + num_merges). Without the rustbpe
    extension, a byte-level tokenizer instead: the tests that use this need real ids, not particular merges."""
    try:
        return Tokenizer.train_from_iterator(iter(texts), vocab_size=256 + len(SPECIAL_TOKENS) + num_merges)
    except (ImportError, AttributeError):
        return Tokenizer(SPLIT_PATTERN, {bytes([i]): i for i in range(256)})


def tiny_gpt(seed=0):
    """A 1-layer GPT over a 20-token vocab (ids only, no tokenizer), seeded, with noise on every weight: the real
    init zeroes lm_head and the output projections, and a model predicting uniformly would test nothing."""
    torch.manual_seed(seed)
    model = build_model(GPTConfig(sequence_len=32, vocab_size=20, n_layer=1, n_head=2, n_kv_head=2, n_embd=16),
                        torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


# -----------------------------------------------------------------------------
# building


def _train_tokenizer():
    vocab_size = 256 + len(SPECIAL_TOKENS) + 64
    return Tokenizer.train_from_iterator(iter(TOKENIZER_CORPUS), vocab_size=vocab_size)


def _train_chat_model(tok, steps=300, seed=0):
    """Overfit a 2-layer GPT on CONVERSATIONS (loss only on the assistant tokens, as in SFT)."""
    torch.manual_seed(seed)
    cfg = GPTConfig(sequence_len=128, vocab_size=tok.get_vocab_size(), n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
    model = build_model(cfg, "cpu", torch.float32)
    rows = [tok.render_conversation(conversation(p, parts)) for p, parts in CONVERSATIONS]
    T = max(len(ids) for ids, _ in rows)
    x = torch.zeros(len(rows), T, dtype=torch.long)  # (B, T)
    y = torch.full((len(rows), T), -1, dtype=torch.long)  # (B, T), -1 = no loss
    for i, (ids, mask) in enumerate(rows):
        x[i, :len(ids)] = torch.tensor(ids)
        targets = [t if m else -1 for t, m in zip(ids[1:], mask[1:])]
        y[i, :len(targets)] = torch.tensor(targets)
    with torch.no_grad():  # the real init zeroes lm_head and the output projections; small noise trains faster
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        loss = model(x, targets=y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval(), cfg, loss.item()


def _random_long_model(tok, seed=0):
    """A random GPT with a 16384-token context that (almost) never ends its turn: ideal for long generations
    (long enough in time that a loaded machine's browser still sees it running when it clicks Stop)."""
    cfg = GPTConfig(sequence_len=16384, vocab_size=tok.get_vocab_size(), n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
    model = build_model(cfg, "cpu", torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        # the stop tokens' logits become exactly 0 while the best other logit is ~+10 (std 4 over ~330 tokens):
        # greedy never stops and sampling stops with probability ~e^-10 per token
        for s in ("<|assistant_end|>", "<|bos|>"):
            model.lm_head.weight[tok.encode_special(s)].zero_()
    return model.eval(), cfg


def build_tiny_base_dir(path, chat_steps=300):
    """Write tokenizer/ and checkpoints/{sft,base}/tiny/ under `path` (once; reused if already there)."""
    path = str(path)
    marker = os.path.join(path, "tiny_ready")
    if os.path.exists(marker):
        return path
    old = os.environ.get("NANOCHAT_BASE_DIR")
    os.environ["NANOCHAT_BASE_DIR"] = path  # checkpoint_dir() reads it
    try:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        tok = _train_tokenizer()
        tok.save(os.path.join(path, "tokenizer"))
        model, cfg, loss = _train_chat_model(tok, chat_steps)
        meta = {"model_config": cfg.to_dict(), "final_loss": loss, "note": "tests/tiny_model.py"}
        save_checkpoint(checkpoint_dir("sft", "tiny"), chat_steps, model, meta=meta)
        model, cfg = _random_long_model(tok)
        save_checkpoint(checkpoint_dir("base", "tiny"), 0, model, meta={"model_config": cfg.to_dict()})
        torch.set_num_threads(threads)
    finally:
        if old is None:
            os.environ.pop("NANOCHAT_BASE_DIR", None)
        else:
            os.environ["NANOCHAT_BASE_DIR"] = old
    with open(marker, "w") as f:
        f.write("ok\n")
    return path


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_base_dir():
    """build_tiny_base_dir in a temp dir named after the code that produces/reads it (rebuilt when that changes)."""
    h = hashlib.sha256()
    for rel in ("tests/tiny_model.py", "nanochat/gpt.py", "nanochat/tokenizer.py", "nanochat/checkpoint.py"):
        with open(os.path.join(REPO, rel), "rb") as f:
            h.update(f.read())
    path = os.path.join(tempfile.gettempdir(), f"nanochat_tiny_{h.hexdigest()[:12]}")
    if not os.path.exists(os.path.join(path, "tiny_ready")):
        tmp = tempfile.mkdtemp(prefix="nanochat_tiny_build_")
        build_tiny_base_dir(tmp)
        try:
            os.rename(tmp, path)  # atomic: a concurrent builder either wins or finds it done
        except OSError:
            pass
    return path


# -----------------------------------------------------------------------------
# a real chat_web server in a subprocess


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChatServer:
    """`python -m scripts.chat_web ARGS` on 127.0.0.1:<free port>, with the tiny base dir; stop() ends it."""

    def __init__(self, base_dir, *args):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="chat_web_", suffix=".log", delete=False)
        env = dict(os.environ, NANOCHAT_BASE_DIR=base_dir, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "scripts.chat_web", "--port", str(self.port), *args],
                                     cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chat_web exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                status, _, _ = request(self.port, "GET", "/health", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"chat_web did not answer /health in {timeout}s:\n{self.log_text()[-3000:]}")

    def health(self):
        return request(self.port, "GET", "/health")[2]

    def log_text(self):
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@contextlib.contextmanager
def chat_servers(base_dir, *server_args):
    """One ChatServer per tuple of arguments, started together (their slow, torch-importing startups overlap);
    yields them ready, in order, and stops every one of them on the way out."""
    servers = [ChatServer(base_dir, *args) for args in server_args]
    try:
        yield tuple(server.wait_ready() for server in servers)
    finally:
        for server in servers:
            server.stop()


def request(port, method, path, body=None, headers=None, timeout=30, conn=None):
    """(status, headers, parsed JSON or raw bytes). body: a dict (sent as JSON), str or bytes."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        data = r.read()
    finally:
        if own:
            conn.close()
    try:
        data = json.loads(data)
    except ValueError:
        pass
    return r.status, dict(r.getheaders()), data
