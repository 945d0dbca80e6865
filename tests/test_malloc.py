"""
keep_freed_memory(): with it, a training step's activations reuse the pages that the previous step freed;
without it glibc hands large freed blocks back to the kernel and every step faults its activations in again.
Counted with getrusage's minor page faults, each variant in a fresh interpreter (mallopt settings are
process-wide and cannot be undone).

    python -m pytest tests/test_malloc.py -q
"""
import sys
import json
import subprocess

import pytest

PROBE = r"""
import sys, json, resource, torch
from nanochat.common import keep_freed_memory
from nanochat.gpt import GPTConfig, build_model
from nanochat.optim import setup_optimizer
torch.set_num_threads(1)
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
model = build_model(GPTConfig(sequence_len=128, vocab_size=4096, n_layer=2, n_head=2, n_kv_head=2, n_embd=128),
                    torch.device("cpu"))
opt = setup_optimizer(model)
x = torch.randint(0, 4096, (8, 128))
faults = []
for step in range(8):  # training steps: activations of a few MiB each, allocated and freed every step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x, x).backward()
    opt.step()
    model.zero_grad(set_to_none=True)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults[4:]}))  # after the warmup steps (optimizer state, heap growth)
"""


def probe(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_keep_freed_memory_stops_refaulting():
    default, kept = probe("default"), probe("keep")
    assert kept["applied"] is True
    assert sum(default["faults"]) > 4 * 1000, default  # > 4 MiB of fresh pages per step, on average
    # the same pages, reused (the heap may still grow a little now and then: hundreds of pages in one step)
    assert sorted(kept["faults"])[1] < 50, kept
    assert sum(kept["faults"]) * 10 < sum(default["faults"]), (kept, default)
