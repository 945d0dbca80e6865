"""
The whole pipeline, micro sized: `bash speedrun.sh --micro DIR --skip-setup` runs every stage of the offline
default (corpus -> tokenizer -> base -> base loss/CORE -> mid -> SFT (+ the from-scratch ablation) -> chat eval
-> paired comparison -> RL -> eval -> report) at toy sizes, and the report must have a section for each.

    python -m pytest tests/test_speedrun.py -q
"""
import os
import re
import sys
import subprocess

import pytest

from tasks.synthmath import SynthMath

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_corpus(directory, n_docs=240):
    """A small text corpus: synthmath problems and solutions as prose documents (deterministic)."""
    os.makedirs(directory, exist_ok=True)
    task = SynthMath(split="train", seed=0)
    for i in range(n_docs):
        conv = task[i]
        question = conv["messages"][0]["content"]
        answer = conv["messages"][1]["content"]
        if not isinstance(answer, str):
            answer = "".join(p["text"] for p in answer)
        with open(os.path.join(directory, f"doc_{i:04d}.txt"), "w") as f:
            f.write(f"Problem {i}. {question}\n\nSolution. {answer}\n")


@pytest.mark.slow
def test_micro_speedrun_produces_every_report_section(tmp_path):
    corpus = tmp_path / "corpus"
    write_corpus(str(corpus))
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(tmp_path / "base"), OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]  # the test's python runs the stages
    proc = subprocess.run(["bash", os.path.join(ROOT, "speedrun.sh"), "--micro", str(corpus), "--skip-setup"],
                          env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "mode=offline" in log and "== speedrun done" in log

    report = open(tmp_path / "base" / "report" / "report.md").read()
    sections = re.findall(r"^## (.+)$", report, flags=re.M)
    for name in ["Summary", "Tokenizer training", "Tokenizer evaluation", "Base model training", "Base model loss",
                 "Base model evaluation", "Midtraining", "Chat SFT", "Chat SFT #2", "Chat evaluation sft",
                 "Chat RL", "Chat evaluation rl"]:
        assert name in sections, f"report lacks section {name!r}; has {sections}"
    assert any(s.startswith("Paired comparison: value of pretraining") for s in sections)
    assert any(s.startswith("Paired comparison: value of RL") for s in sections)
    # each comparison scored the checkpoints it names (an earlier speedrun let "the newest sft tag" pick the
    # from-scratch ablation for both sides, and started RL from it)
    import json
    evals = {name: json.load(open(tmp_path / "base" / "eval" / f"{name}.json"))
             for name in ("sft_heldout", "scratch_heldout", "rl_heldout")}
    assert [(e["stage"], e["tag"]) for e in evals.values()] == [("sft", "d1"), ("sft", "scratch"), ("rl", "d1")]
    assert set(evals["sft_heldout"]["results"]) == {"SynthMath12", "SynthMathFresh"}
    rl = json.load(open(tmp_path / "base" / "report" / "chat-rl.json"))
    assert rl["data"][1]["start checkpoint"].startswith("sft/d1@")
    # the summary table carries the stages' numbers, the ablation in its own column
    summary = report[report.index("## Summary"):]
    assert re.search(r"\| val bpb \| \d+\.\d{4} \|", summary)
    assert "SFT/SCRATCH" in summary.split("\n\n")[1] or "SFT/SCRATCH" in summary
    assert "SFT/D1" not in summary and "RL/D1" not in summary  # the main line stays in the stage columns
    # base training lowered the validation bits per byte
    start = float(re.search(r"val bpb at start: (\d+\.\d+)", report).group(1))
    end = float(re.search(r"val bpb at end: (\d+\.\d+)", report).group(1))
    assert end < start
    # the loss curve was plotted
    assert os.path.exists(tmp_path / "base" / "report" / "loss.svg")
