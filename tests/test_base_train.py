"""
End-to-end tests of scripts/base_train.py on the synthetic toy language (no tokenizer or shards needed):
bit-identical resume, the non-finite-loss stop, a SIGTERM that saves and exits, clear errors, and a 2-process
gloo run that saves and resumes.

    python -m pytest tests/test_base_train.py -q
"""
import os
import re
import json
import signal
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--data", "synthetic", "--vocab-size", "64", "--depth", "1", "--max-seq-len", "32",
        "--device-batch-size", "2", "--total-batch-size", "128", "--eval-every", "3", "--eval-tokens", "64",
        "--device-type", "cpu", "--warmdown-ratio", "0.5"]


def run(base_dir, *args, launcher=None):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base_dir), OMP_NUM_THREADS="1")
    cmd = (launcher or [sys.executable]) + ["-m", "scripts.base_train", *TINY, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def records(base_dir, run_name="d1"):
    with open(os.path.join(base_dir, "runs", run_name, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def final_weights(base_dir, step):
    path = os.path.join(base_dir, "checkpoints", "base", "d1", f"step_{step:06d}", "model.pt")
    return torch.load(path, weights_only=True)


def test_resume_is_bit_identical(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    r = run(straight, "--num-iterations", "6")
    assert r.returncode == 0, r.stderr
    r = run(split, "--num-iterations", "6", "--stop-after", "3")
    assert r.returncode == 0, r.stderr
    assert "saved" in r.stdout and "step_000003" in r.stdout
    r = run(split, "--num-iterations", "6", "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout
    a, b = records(straight), records(split)
    assert [x["step"] for x in a if "loss" in x] == [1, 2, 3, 4, 5, 6]
    # identical curves: train losses and validation bpb, float for float
    strip = lambda recs: [(x["step"], x.get("loss"), x.get("val_bpb")) for x in recs]
    assert strip(a) == strip(b)
    wa, wb = final_weights(straight, 6), final_weights(split, 6)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], final_weights(split, 3)[k]) for k in wa)  # training did move them


def test_nan_loss_stops_at_once_and_keeps_last_good_checkpoint(tmp_path):
    r = run(tmp_path, "--num-iterations", "10", "--save-every", "1", "--debug-nan-step", "2")
    assert r.returncode == 3
    assert "loss is nan at step 2" in r.stdout and "last good checkpoint is step 2" in r.stdout
    assert "step 00003/" not in r.stdout  # stopped within the step: no update, no further steps
    from nanochat.checkpoint import find_latest_step, model_from_checkpoint
    d = os.path.join(tmp_path, "checkpoints", "base", "d1")
    assert find_latest_step(d) == 2
    model, meta = model_from_checkpoint(d, "cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bad_flags_are_one_clear_sentence(tmp_path):
    r = run(tmp_path, "--num-iterations", "2", "--total-batch-size", "100")
    assert r.returncode == 2 and "must be a multiple of" in r.stdout and "Traceback" not in r.stderr
    r = run(tmp_path, "--num-iterations", "2", "--resume")
    assert r.returncode == 2 and "no complete checkpoint" in r.stdout
    r = subprocess.run([sys.executable, "-m", "scripts.base_train", "--help"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "--target-param-data-ratio" in r.stdout and "--device-batch-size" in r.stdout


def test_sigterm_finishes_the_step_saves_and_resume_completes(tmp_path):
    """A scheduler's SIGTERM (or Ctrl-C) mid-run: the process saves the step it reached and exits 128 + 15, so
    nothing trained is lost and a pipeline stops; --resume then finishes the run."""
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "scripts.base_train", *TINY, "--num-iterations", "400"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until training is under way, then ask it to stop
        lines.append(line)
        if line.startswith("step 00005/"):
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, out[-3000:]
    stopped = re.search(r"stopped by SIGTERM at step (\d+): saved a checkpoint there", out)
    assert stopped and "Traceback" not in out, out[-3000:]
    from nanochat.checkpoint import find_latest_step
    step = int(stopped.group(1))
    assert 5 <= step < 400 and find_latest_step(os.path.join(tmp_path, "checkpoints", "base", "d1")) == step
    r = run(tmp_path, "--num-iterations", "400", "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "resumed from" in r.stdout and records(tmp_path)[-1]["step"] == 400


@pytest.mark.slow
def test_two_process_gloo_run_saves_and_resumes(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    r = run(tmp_path, "--num-iterations", "4", "--stop-after", "2", launcher=torchrun)
    assert r.returncode == 0, r.stderr[-2000:]
    step_dir = os.path.join(tmp_path, "checkpoints", "base", "d1", "step_000002")
    assert sorted(os.listdir(step_dir)) == ["COMPLETED", "meta.json", "model.pt", "optim_rank000.pt",
                                            "optim_rank001.pt", "state_rank000.pt", "state_rank001.pt"]
    r = run(tmp_path, "--num-iterations", "4", "--resume", launcher=torchrun)
    assert r.returncode == 0, r.stderr[-2000:]
    losses = [x["loss"] for x in records(tmp_path) if "loss" in x]
    assert len(losses) == 4 and all(l == l for l in losses)
    # resuming with a different process count is refused with the fix named
    r = run(tmp_path, "--num-iterations", "6", "--resume")
    assert r.returncode != 0 and "--nproc_per_node=2" in (r.stdout + r.stderr)
