"""
End-to-end tests of scripts/chat_cft.py on a tiny random checkpoint (CPU, one thread, about a minute): the
candidate pool, the equal token budget of the arms, checkpoints and saved runs, and the clear errors.

    python -m pytest tests/test_chat_cft.py -q
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from nanochat.checkpoint import save_checkpoint
from nanochat.gpt import GPTConfig, build_model
from nanochat.tokenizer import Tokenizer
from tests.tiny_model import tiny_base_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--model-tag", "t", "--num-questions", "3", "--samples-per-question", "1", "--corruptions-per-question", "2",
         "--max-new-tokens", "6", "--critique-tokens", "6", "--eval-problems", "2", "--judge-pairs", "2",
         "--examples-per-step", "4", "--device-batch-size", "4", "--token-budget", "1500"]


def run(base_dir, *args):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base_dir), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "scripts.chat_cft", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """The tiny tokenizer and a random 1-layer model with a context long enough for critique rows."""
    base = tmp_path_factory.mktemp("cft")
    shutil.copytree(os.path.join(tiny_base_dir(), "tokenizer"), base / "tokenizer")
    tok = Tokenizer.from_directory(str(base / "tokenizer"))
    torch.manual_seed(0)
    cfg = GPTConfig(sequence_len=1024, vocab_size=tok.get_vocab_size(), n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
    model = build_model(cfg, torch.device("cpu"))
    save_checkpoint(str(base / "checkpoints" / "sft" / "t"), 1, model, meta=dict(model_config=cfg.to_dict()))
    return base


def test_cft_run_pool_budget_and_outputs(base_dir):
    r = run(base_dir, *SMALL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    saved = json.load(open(base_dir / "cft" / "runs" / "cft-s42.json"))
    # 3 questions x (1 own sample + 1 gold + up to 2 corruptions); every gold is judged right, so >= 3 right
    pool = saved["pool"]
    assert 3 * 2 < pool["candidates"] <= 3 * 4 and pool["samples"] == 3
    assert pool["right"] >= 3 and pool["right"] < pool["candidates"]
    # the budget is reached and overshot by less than one row (rows are at most the 1024-token context)
    assert 1500 <= saved["tokens"] < 1500 + 1025
    assert saved["steps"] == saved["conversations"] // 4
    assert saved["direct"]["n"] == 2 and saved["judge"]["n"] == 2
    meta = json.load(open(os.path.join(saved["checkpoint"], "meta.json")))
    assert meta["arm"] == "cft" and meta["tokens"] == saved["tokens"] and "cft/t-cft-s42" in saved["checkpoint"]
    summary = json.load(open(base_dir / "cft" / "summary.json"))["summary"]
    assert list(summary) == ["cft"] and summary["cft"]["seeds"] == [42]
    # the input model's evaluation is cached per eval settings: other settings evaluate it again
    assert json.load(open(base_dir / "cft" / "runs" / "input.json"))["key"]["eval_problems"] == 2
    r = run(base_dir, *SMALL, "--num-questions", "1", "--eval-problems", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.load(open(base_dir / "cft" / "runs" / "input.json"))["direct"]["n"] == 3


def test_sft_arm_and_summarize(base_dir):
    r = run(base_dir, *SMALL, "--arm", "sft-gold", "--seed", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    saved = json.load(open(base_dir / "cft" / "runs" / "sft-gold-s1.json"))
    assert saved["arm"] == "sft-gold" and 1500 <= saved["tokens"]
    r = run(base_dir, "--summarize", "--experiment", "--seeds", "1,42")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.load(open(base_dir / "cft" / "summary.json"))["summary"]
    assert summary["cft"]["seeds"] == [42] and summary["sft-gold"]["seeds"] == [1]


def test_clear_errors(base_dir):
    r = run(base_dir, *SMALL, "--critic", "sft:t")  # a random teacher never concludes
    assert r.returncode != 0 and "ended no critique with 'Conclusion: right|wrong'" in r.stderr
    assert "Traceback" not in r.stderr
    r = run(base_dir, *SMALL, "--critic", "rl:nope")
    assert r.returncode != 0 and "error: --critic rl:nope" in r.stderr and "Traceback" not in r.stderr
    r = run(base_dir, "--experiment", "--seeds", "a,b")
    assert r.returncode != 0 and "--seeds 'a,b'" in r.stderr
