"""
Bad input to a script ends it with one clear message and a non-zero exit, never a Python traceback: a device
torch does not know, a size that cannot be, a missing tokenizer, a failed stage of an experiment driver.
Each case runs the real script in a fresh base directory (nothing trained there).

    python -m pytest tests/test_cli_errors.py -q
"""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH = ["--data", "synthetic", "--device-type", "cpu", "--num-iterations", "1"]

CASES = [
    # (script and flags, exit code, what the message must say)
    (["base_train", "--device-type", "tpu"], 1, "--device-type 'tpu' is not supported"),
    (["chat_sft", "--device-type", "tpu"], 1, "--device-type 'tpu' is not supported"),
    (["chat_cli", "--device", "tpu", "-p", "hi"], 1, "--device 'tpu' is not supported"),
    (["model_bench", "--device-type", "tpu"], 1, "--device-type 'tpu' is not supported"),
    (["base_train", *SYNTH, "--depth", "-5"], 2, "--depth must be >= 1"),
    (["base_train", *SYNTH, "--max-seq-len", "0"], 2, "--max-seq-len must be >= 1"),
    (["base_train", *SYNTH, "--warmdown-ratio", "1.5"], 2, "--warmdown-ratio must lie in [0, 1]"),
    (["base_train", *SYNTH, "--matrix-lr", "-1"], 2, "--matrix-lr must be >= 0"),
    (["base_train", *SYNTH, "--seed", "-5"], 1, "--seed -5 must lie in [0, 2**32)"),
    # the chat stages check their flags before loading anything
    (["chat_sft", "--device-batch-size", "0"], 2, "--device-batch-size must be >= 1"),
    (["mid_train", "--warmdown-ratio", "2"], 2, "--warmdown-ratio must lie in [0, 1]"),
    (["chat_rl", "--min-steps", "3", "--max-steps", "2"], 2, "need 1 <= min_steps <= max_steps <= 4"),
    (["chat_cft", "--eval-problems", "0"], 2, "--eval-problems must be >= 1"),
    (["chat_eval", "-i", "sft", "--temperature", "-1"], 2, "--temperature must be >= 0"),
    (["s1_curate", "--max-number", "2"], 2, "max_number=2: use at least 5"),
    (["tok_train", "--vocab-size", "100"], 2, "--vocab-size must be at least"),
    (["chat_rl", "--pass-k", "-2"], 2, "--pass-k 1 is the greedy pass@1"),
    (["tok_eval"], 1, "no tokenizer at"),
    (["base_train", "--device-type", "cpu"], 1, "no tokenizer at"),
    (["loader_bench"], 1, "no tokenizer at"),
    # an experiment driver whose first stage fails (no SFT checkpoint): the stage's exit code and one line
    (["exp_dpo", "--seeds", "1"], 1, "this stage failed (exit code 1)"),
]


@pytest.mark.parametrize("argv,code,message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_clear_message(tmp_path, argv, code, message):
    env = dict(os.environ, NANOCHAT_BASE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", f"scripts.{argv[0]}", *argv[1:]], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == code, out[-2000:]
    assert message in out, out[-2000:]
    assert "Traceback" not in out, out[-2000:]
