"""
End-to-end tests of scripts/chat_rl.py on the tiny checkpoint of tests/tiny_model.py: a few RL steps complete,
write metrics / a checkpoint / the report section, actually change the weights, and a run split by --resume
ends with exactly the weights of an uninterrupted one; Ctrl-C saves the step it reached and exits 130.
Run: python -m pytest tests/test_chat_rl.py -q
"""
import os
import re
import sys
import json
import signal
import subprocess

import pytest
import torch

from tests.tiny_model import build_tiny_base_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# SynthIF's reward is the fraction of constraints met; at temperature 2 the tiny model's 6 samples of a prompt
# meet different ones by chance (e.g. "lowercase", "no commas"), so rewards vary within groups and the update
# is not zero (--drop-constant-groups then reports how many groups had signal). 4 new tokens keep each step
# to a fraction of a second.
SMALL = ["--task", "synthif", "--prompts-per-step", "2", "--num-samples", "6", "--max-new-tokens", "4",
         "--device-batch-size", "4", "--eval-problems", "3", "--eval-every", "-1", "--pass-k", "0",
         "--init-lr-frac", "1.0", "--kl-beta", "0.05", "--ppo-epochs", "2", "--top-k", "0", "--unfinished-penalty", "0.5",
         "--temperature", "2.0", "--drop-constant-groups"]


def run_rl(base_dir, *extra):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base_dir), OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "scripts.chat_rl", *SMALL, *extra], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def weights(base_dir, stage, tag, step):
    path = os.path.join(base_dir, "checkpoints", stage, tag, f"step_{step:06d}", "model.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_base_dir(tmp_path_factory.mktemp("rl_base"))


def test_tiny_run_metrics_checkpoint_report_and_exact_resume(base):
    # uninterrupted: 3 steps
    log = run_rl(base, "--num-steps", "3", "--output-tag", "full", "--run", "full")
    assert "RL - start" in log
    # split: stop after 2 of 3 steps, then --resume
    run_rl(base, "--num-steps", "3", "--stop-after", "2", "--output-tag", "split")  # same lr schedule as full
    log = run_rl(base, "--num-steps", "3", "--output-tag", "split", "--resume")
    assert "resumed from" in log and "step 2" in log

    records = [json.loads(line) for line in open(os.path.join(base, "runs", "full", "metrics.jsonl"))]
    steps = [r for r in records if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(0.0 <= r["reward"] <= 1.0 and "kl" in r and "clip_frac" in r for r in steps)
    # entropy is measured on the tokens trained on: positive when a group was kept, 0 when none was
    assert all((r["entropy"] > 0) == (r["groups_kept"] > 0) for r in steps)
    assert sum(r["groups_kept"] for r in steps) > 0  # some groups had a non-constant reward
    assert "held-out_pass@1" in records[-1] and "RL_-_start" in records[-1]
    split = [json.loads(line) for line in open(os.path.join(base, "runs", "rl_split", "metrics.jsonl"))]
    assert [r["step"] for r in split if "reward" in r] == [1, 2, 3]  # the resumed run continued the same curve

    start = weights(base, "sft", "tiny", 300)
    full, resumed = weights(base, "rl", "full", 3), weights(base, "rl", "split", 3)
    assert any(not torch.equal(start[k], full[k]) for k in start), "RL did not change the weights"
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], rtol=0, atol=0)
    meta = json.load(open(os.path.join(base, "checkpoints", "rl", "full", "step_000003", "meta.json")))
    assert meta["step"] == 3 and meta["loop_state"]["source_checkpoint"]["stage"] == "sft"
    assert len(meta["loop_state"]["baseline_items"]) == 3
    report = json.load(open(os.path.join(base, "report", "chat-rl.json")))
    assert report["column"] == "rl" and "synthif held-out pass@1" in report["summary"]


def test_sigint_saves_the_step_and_exits_130(base):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base), OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "scripts.chat_rl", *SMALL, "--num-steps", "200", "--output-tag", "ctrlc"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 2/200"):
            proc.send_signal(signal.SIGINT)
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == 130, out[-3000:]
    stopped = re.search(r"stopped by SIGINT at step (\d+): saved a checkpoint there", out)
    assert stopped and "Traceback" not in out, out[-3000:]
    step = int(stopped.group(1))
    assert 2 <= step < 200 and os.path.exists(os.path.join(base, "checkpoints", "rl", "ctrlc", f"step_{step:06d}",
                                                           "COMPLETED"))


def test_bad_flags_are_clear_errors(base):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base), PYTHONPATH=ROOT)
    cases = [(["--advantage", "drgrpo", "--loss-norm", "token"], "drop --loss-norm"),
             (["--num-samples", "0"], "--num-samples must be >= 1"),
             (["--source", "mid"], "run that stage first")]
    for flags, message in cases:
        out = subprocess.run([sys.executable, "-m", "scripts.chat_rl", *flags], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and message in out.stderr + out.stdout, (flags, out.stderr[-500:])
        assert "Traceback" not in out.stderr
