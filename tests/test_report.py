"""
Tests for nanochat/report.py: sections, the summary table across stages, ordering, and the SVG plots.

    python -m pytest tests/test_report.py -q
"""
import os
import json

from nanochat.report import Report, svg_line_plot, slugify


def test_sections_summary_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    report = Report()
    report.reset()
    # written out of order on purpose: generate() must follow SECTION_ORDER
    report.log("Chat SFT", [{"lr": 0.02}, "trained on 3 tasks"], summary={"SynthMath": 0.5}, column="sft")
    report.log("Base model training", [{"depth": 4, "val bpb": 1.234567}], summary={"val bpb": 1.2346}, column="base")
    report.log("Chat RL", [{"steps": 10}], summary={"SynthMath": 0.625}, column="rl")
    report.log("My extra experiment", ["free text"])
    report.log("Chat SFT", [{"from scratch": True}], summary={"SynthMath": 0.25}, column="sft/scratch")
    run = tmp_path / "runs" / "base_d4"
    run.mkdir(parents=True)
    with open(run / "metrics.jsonl", "w") as f:
        for step in range(5):
            f.write(json.dumps({"step": step, "loss": 5.0 - step}) + "\n")
        f.write("not json\n")  # a torn last line must not break the report
    path = report.generate()
    text = open(path).read()

    # every section, in canonical order, extras last
    order = [text.index(f"## {s}\n") for s in ["Base model training", "Chat SFT", "Chat SFT #2", "Chat RL",
                                                 "My extra experiment"]]
    assert order == sorted(order)
    # the summary table has the stage columns in pipeline order and the values
    table = text[text.index("## Summary"):text.index("## Base model training")]
    assert "| metric | BASE | SFT | RL | SFT/SCRATCH |" in table
    assert "| SynthMath | - | 0.5000 | 0.6250 | 0.2500 |" in table  # a second run never overwrites the first
    assert "| val bpb | 1.2346 | - | - | - |" in table
    assert "- val bpb: 1.2346" in text  # floats formatted in sections
    # the loss plot exists, is SVG and is linked
    svg = open(os.path.join(report.dir, "loss.svg")).read()
    assert svg.startswith("<svg") and "polyline" in svg and "base_d4" in svg
    assert "![training loss](loss.svg)" in text
    assert not os.path.exists(os.path.join(report.dir, "reward.svg"))  # no RL metrics -> no reward plot


def test_svg_plot_scales_points_into_the_box():
    svg = svg_line_plot({"a": [(0, 0.0), (10, 1.0)]}, "t", "x", "y", width=200, height=100)
    pts = svg.split('points="')[1].split('"')[0].split()
    (xa, ya), (xb, yb) = [tuple(map(float, p.split(","))) for p in pts]
    assert (xa, ya) == (60.0, 60.0)       # left margin, bottom margin
    assert (xb, yb) == (180.0, 30.0)      # right margin, top margin
    assert svg_line_plot({}, "t", "x", "y") is None


def test_slugify():
    assert slugify("Chat evaluation sft") == "chat-evaluation-sft"
    assert slugify("  RL: GRPO (β=0.1) ") == "rl-grpo-0-1"


def test_summary_column_main_line_and_ablations():
    from nanochat.report import summary_column
    assert summary_column("sft", None) == summary_column("sft", "d2") == summary_column("sft", "d20") == "sft"
    assert summary_column("sft", "scratch") == "sft/scratch" and summary_column("rl", "d2try") == "rl/d2try"
