"""
The report card: every stage writes its section; `generate` stitches them into report.md with a summary table.

    python -m nanochat.report reset       # start a new report (speedrun.sh does this first)
    python -m nanochat.report generate    # write <base_dir>/report/report.md (plots beside it)

In a script:
    from nanochat.report import get_report
    get_report().log("Base model training", [vars(args), {"val bpb": 0.81}],
                     summary={"val bpb": 0.81}, column="base")

Sections live as <base_dir>/report/<slug>.md (human readable) plus <slug>.json (the same data, for the summary
table). Plots are SVG files written by hand (no plotting dependency) and linked from the markdown.
Only rank 0 writes; other ranks get a no-op report.
"""
import os
import re
import sys
import json
import glob
import time
import shutil
import socket
import platform
import datetime
import subprocess

from nanochat.common import get_base_dir, get_dist_info

# the order sections appear in; sections not listed go after these, in the order they were written
SECTION_ORDER = [
    "Tokenizer training", "Tokenizer evaluation",
    "Base model training", "Base model loss", "Base model evaluation",
    "Midtraining", "Chat evaluation mid",
    "Chat SFT", "Chat evaluation sft",
    "Chat RL", "Chat evaluation rl",
]
SUMMARY_COLUMNS = ["base", "mid", "sft", "rl"]  # further columns (rft, cft, dpo, ...) are appended as they appear
MAIN_TAG = re.compile(r"d\d+")  # base_train's default tag d<depth> marks the main line; other tags are ablations
GPU_HOURLY_USD = 3.0  # rough on-demand price of one H100-hour, for the cost estimate


def summary_column(stage, tag):
    """The summary-table column of a checkpoint: its stage for the main line (d20, d2, ...), stage/tag for an
    ablation such as sft/scratch, so the ablation's numbers sit beside the main ones instead of overwriting them."""
    return stage if tag is None or MAIN_TAG.fullmatch(tag) else f"{stage}/{tag}"

# -----------------------------------------------------------------------------
# system and git info for the header


def _run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_info():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = _run(["git", "-C", root, "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = bool(_run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"]))
    return {"commit": commit, "dirty": dirty, "branch": _run(["git", "-C", root, "rev-parse", "--abbrev-ref", "HEAD"])}


def system_info():
    import torch
    info = {
        "host": socket.gethostname(), "platform": platform.platform(), "python": sys.version.split()[0],
        "torch": torch.__version__, "cpus": os.cpu_count(),
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if info["gpus"]:
        info["gpu name"] = torch.cuda.get_device_name(0)
    return info


# -----------------------------------------------------------------------------
# hand-written SVG line plots


def svg_line_plot(series, title, xlabel, ylabel, width=640, height=360):
    """series: {name: [(x, y), ...]} -> an SVG document (str). Simple, dependency-free, readable."""
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    points = [p for s in series.values() for p in s]
    if not points:
        return None
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    L, R, T, B = 60, 20, 30, 40  # margins

    def sx(x):
        return L + (x - x0) / (x1 - x0) * (width - L - R)

    def sy(y):
        return height - B - (y - y0) / (y1 - y0) * (height - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" stroke="black"/>',
           f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">{xlabel}</text>',
           f'<text x="14" y="{height / 2}" text-anchor="middle" transform="rotate(-90 14 {height / 2})">{ylabel}</text>']
    for frac in (0, 0.5, 1):  # three ticks per axis are enough to read the scale
        xv, yv = x0 + frac * (x1 - x0), y0 + frac * (y1 - y0)
        out.append(f'<text x="{sx(xv):.1f}" y="{height - B + 14}" text-anchor="middle">{xv:.4g}</text>')
        out.append(f'<text x="{L - 4}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.4g}</text>')
    for i, (name, pts) in enumerate(series.items()):
        c = colors[i % len(colors)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        out.append(f'<text x="{width - R - 4}" y="{T + 14 * (i + 1)}" text-anchor="end" fill="{c}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out)


# -----------------------------------------------------------------------------
# the report


def slugify(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _format_item(item):
    if isinstance(item, str):
        return item
    lines = []
    for k, v in item.items():
        if isinstance(v, float):
            v = f"{v:.4f}"
        lines.append(f"- {k}: {v}")
    return "\n".join(lines)


class Report:
    def __init__(self, report_dir=None):
        self.dir = report_dir or os.path.join(get_base_dir(), "report")
        os.makedirs(self.dir, exist_ok=True)

    def log(self, section, data, summary=None, column=None):
        """Write one section. data: list of dicts / strings; summary: {metric: value} for the table's `column`."""
        slug = slugify(section)
        n = 2
        while os.path.exists(os.path.join(self.dir, f"{slugify(section)}.json")) and n < 1000:
            # a stage run twice (an ablation, a second eval) gets a second section, never overwrites the first
            section = f"{section.rsplit(' #', 1)[0]} #{n}"
            n += 1
        slug = slugify(section)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        md = [f"## {section}", f"timestamp: {stamp}", ""] + [_format_item(x) + "\n" for x in data]
        with open(os.path.join(self.dir, f"{slug}.md"), "w") as f:
            f.write("\n".join(md))
        record = {"section": section, "time": time.time(), "data": data, "summary": summary or {}, "column": column}
        with open(os.path.join(self.dir, f"{slug}.json"), "w") as f:
            json.dump(record, f, indent=1, default=str)
        return os.path.join(self.dir, f"{slug}.md")

    def reset(self):
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        header = {"started": time.time(), "git": git_info(), "system": system_info()}
        with open(os.path.join(self.dir, "header.json"), "w") as f:
            json.dump(header, f, indent=1)
        print(f"report reset: {self.dir}")

    # --- generate

    def _records(self):
        recs = []
        for path in glob.glob(os.path.join(self.dir, "*.json")):
            if os.path.basename(path) == "header.json":
                continue
            with open(path) as f:
                recs.append(json.load(f))
        rank = {name: i for i, name in enumerate(SECTION_ORDER)}
        base_name = lambda r: r["section"].rsplit(" #", 1)[0]  # "Chat SFT #2" sorts with "Chat SFT"
        return sorted(recs, key=lambda r: (rank.get(base_name(r), len(rank)), r["time"]))

    def _summary_table(self, recs):
        columns = list(SUMMARY_COLUMNS)
        table = {}  # metric -> {column: value}
        for r in recs:
            col = r.get("column")
            if not col or not r.get("summary"):
                continue
            if col not in columns:
                columns.append(col)
            for metric, value in r["summary"].items():
                table.setdefault(metric, {})[col] = value
        if not table:
            return "(no stage reported summary metrics yet)\n"
        used = [c for c in columns if any(c in row for row in table.values())]
        lines = ["| metric | " + " | ".join(c.upper() for c in used) + " |", "|---" * (len(used) + 1) + "|"]
        for metric, row in table.items():
            cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "-")) for c in used]
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def _plots(self):
        """Loss curves of every run with a metrics.jsonl, and RL reward curves; returns markdown lines."""
        lines = []
        runs = sorted(glob.glob(os.path.join(get_base_dir(), "runs", "*", "metrics.jsonl")))
        for key, title, fname in [("loss", "training loss", "loss.svg"), ("reward", "RL mean reward", "reward.svg")]:
            series = {}
            for path in runs:
                pts = []
                with open(path) as f:
                    for line in f:
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        if key in row and "step" in row and isinstance(row[key], (int, float)):
                            pts.append((row["step"], row[key]))
                if pts:
                    series[os.path.basename(os.path.dirname(path))] = pts
            svg = svg_line_plot(series, title, "step", key)
            if svg:
                with open(os.path.join(self.dir, fname), "w") as f:
                    f.write(svg)
                lines.append(f"![{title}]({fname})\n")
        return lines

    def generate(self):
        header_path = os.path.join(self.dir, "header.json")
        header = json.load(open(header_path)) if os.path.exists(header_path) else \
            {"started": None, "git": git_info(), "system": system_info()}
        recs = self._records()
        out = ["# nanochat report card", ""]
        g = header["git"]
        out.append(f"- git commit: {g['commit']}{' (dirty)' if g['dirty'] else ''}, branch {g.get('branch', '')}")
        out += [f"- {k}: {v}" for k, v in header["system"].items()]
        out.append(f"- generated: {datetime.datetime.now():%Y-%m-%d %H:%M:%S}")
        if header.get("started"):
            hours = (time.time() - header["started"]) / 3600
            out.append(f"- total wall time: {hours * 60:.1f} min")
            gpus = header["system"].get("gpus", 0)
            if gpus:
                out.append(f"- cost estimate: {gpus} GPUs x {hours:.2f} h x ${GPU_HOURLY_USD}/GPU-h = "
                           f"${gpus * hours * GPU_HOURLY_USD:.0f}")
        out += ["", "## Summary", "", self._summary_table(recs)]
        out += self._plots()
        for r in recs:
            with open(os.path.join(self.dir, f"{slugify(r['section'])}.md")) as f:
                out += ["", f.read()]
        path = os.path.join(self.dir, "report.md")
        with open(path, "w") as f:
            f.write("\n".join(out) + "\n")
        print(f"report written: {path}")
        return path


class DummyReport:
    def log(self, *args, **kwargs):
        pass

    def reset(self, *args, **kwargs):
        pass


def get_report():
    return Report() if get_dist_info()[1] == 0 else DummyReport()


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Reset or generate the nanochat report card")
    parser.add_argument("command", choices=["reset", "generate"], help="reset: start anew; generate: write report.md")
    args = parser.parse_args()
    report = Report()
    if args.command == "reset":
        report.reset()
    else:
        report.generate()
