"""
A micro end-to-end run of the chat stages, each as `python -m scripts.X` in a temp NANOCHAT_BASE_DIR:
tiny tokenizer -> tiny base (a few base_train steps on the synthetic toy language) -> mid_train -> chat_sft
-> chat_eval on small slices. Checks checkpoints, metrics, report sections, the eval JSON, resume and a clear
error; the numbers must be sane (finite losses below chance, accuracies in [0, 1], one item per problem).
Synthetic tasks only, so no downloaded data is needed.

    python -m pytest tests/test_chat_stages.py -q
"""
import os
import re
import sys
import json
import math
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 300  # 256 bytes + 11 specials + a few merges: a tokenizer trained in a second
COMMON = ["--device-type", "cpu", "--data", "offline", "--device-batch-size", "4", "--eval-batches", "2",
          "--eval-max-problems", "4", "--eval-max-new-tokens", "12"]


def run(base_dir, module, *args):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(base_dir), OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    return r


def ok(r):
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def metrics(base_dir, run_name):
    with open(os.path.join(base_dir, "runs", run_name, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def report(base_dir, slug):
    with open(os.path.join(base_dir, "report", f"{slug}.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every stage once; the tests below inspect what they left behind."""
    base = tmp_path_factory.mktemp("nanochat")
    text = base / "corpus.txt"
    text.write_text("How many apples? Ava has 12 apples and buys 7 more. 12+7 = 19. #### 19\n" * 50)
    ok(run(base, "scripts.tok_train", "--vocab-size", str(VOCAB), "--text-files", str(text)))
    ok(run(base, "scripts.base_train", "--data", "synthetic", "--vocab-size", str(VOCAB), "--depth", "1",
           "--max-seq-len", "128", "--device-batch-size", "4", "--total-batch-size", "512", "--num-iterations", "3",
           "--eval-every", "-1", "--device-type", "cpu"))
    out = {}
    out["mid"] = ok(run(base, "scripts.mid_train", *COMMON, "--mix", "synthmath:60,mcq:60,identity:20",
                        "--val-mix", "synthmath:10,mcq:10", "--total-batch-size", "1024", "--eval-every", "4",
                        "--eval-tasks", "MCQ"))
    out["sft"] = ok(run(base, "scripts.chat_sft", *COMMON, "--mix", "mcq:48,synthmath12:16",
                        "--val-mix", "mcq:16", "--examples-per-step", "8", "--eval-every", "4",
                        "--eval-tasks", "MCQ|SynthMath12", "--init-lr-frac", "1.0"))
    out["eval"] = ok(run(base, "scripts.chat_eval", "-i", "sft", "-a", "MCQ|SynthMath12", "-x", "6", "-m", "16",
                         "--device-type", "cpu"))
    return base, out


def sft_steps(out):
    """Steps of the SFT run: its training conversations (after decontamination drops some) / 8 per step."""
    n = int(re.search(r"\[data\] sft/train .*= ([\d,]+) conversations", out["sft"]).group(1).replace(",", ""))
    return n // 8


def test_checkpoints_of_every_stage(pipeline):
    base, out = pipeline
    for stage in ("base", "mid", "sft"):
        stage_dir = os.path.join(base, "checkpoints", stage, "d1")
        steps = [d for d in os.listdir(stage_dir) if d.startswith("step_")]
        assert steps and all(os.path.exists(os.path.join(stage_dir, s, "COMPLETED")) for s in steps)
    last = sft_steps(out)
    assert last in (7, 8)  # 64 conversations, minus any that decontamination drops, 8 per step
    with open(os.path.join(base, "checkpoints", "sft", "d1", f"step_{last:06d}", "meta.json")) as f:
        meta = json.load(f)
    assert meta["source"]["stage"] == "mid" and meta["args"]["stage"] == "sft"
    assert "synthmath12" in meta["data"]["train"]


def test_metrics_are_sane(pipeline):
    base, _ = pipeline
    for run_name in ("mid_d1", "sft_d1"):
        rows = metrics(base, run_name)
        losses = [r["loss"] for r in rows if "loss" in r]
        vals = [r["val_loss"] for r in rows if "val_loss" in r]
        assert losses and vals and all(math.isfinite(x) for x in losses + vals)
        assert vals[-1] < math.log(VOCAB)  # better than a uniform guess
        assert [r["step"] for r in rows if "loss" in r] == list(range(1, len(losses) + 1))
    sft_evals = [r for r in metrics(base, "sft_d1") if "eval/MCQ" in r]
    assert sft_evals and all(0 <= r["eval/MCQ"] <= 1 and 0 <= r["eval/SynthMath12"] <= 1 for r in sft_evals)


def test_report_sections(pipeline):
    base, _ = pipeline
    assert report(base, "midtraining")["column"] == "mid"
    sft = report(base, "chat-sft")
    assert sft["column"] == "sft" and math.isfinite(sft["data"][2]["val loss"])
    ev = report(base, "chat-evaluation-sft")
    assert ev["column"] == "sft" and set(ev["summary"]) == {"MCQ", "SynthMath12"}  # slices: no ChatCORE


def test_eval_json_has_per_item_results(pipeline):
    base, out = pipeline
    last = sft_steps(out)
    path = os.path.join(base, "eval", f"sft_d1_{last:06d}.json")
    with open(path) as f:
        payload = json.load(f)
    assert payload["chatcore"] is None and payload["step"] == last
    for name in ("MCQ", "SynthMath12"):
        res = payload["results"][name]
        assert res["n"] == 6 and not res["full"] and len(res["items"]) == 6
        assert res["accuracy"] == pytest.approx(sum(it["correct"] for it in res["items"]) / 6)
    assert "MCQ" in out["eval"] and path in out["eval"]


def test_resume_and_clear_errors(pipeline):
    base, out = pipeline
    r = ok(run(base, "scripts.chat_sft", *COMMON, "--mix", "mcq:48,synthmath12:16", "--val-mix", "mcq:16",
               "--examples-per-step", "8", "--eval-tasks", "", "--resume"))
    assert "resumed from" in r and f"at step {sft_steps(out)}" in r  # already finished: resumes at the end and stops
    r = run(base, "scripts.chat_sft", "--device-type", "cpu", "--source", "rl")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "no complete rl checkpoint" in r.stderr
    r = run(base, "scripts.chat_eval", "-i", "sft", "-a", "Nope", "--device-type", "cpu")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "unknown task" in r.stderr
    r = run(base, "scripts.mid_train", *COMMON, "--mix", "smoltalk:10")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "needs Hugging Face" in r.stderr
