"""
Tests for nanochat/checkpoint.py: exact round trips, latest/clean/keep-last rules, and a saving process
SIGKILLed at random moments many times never leaving a "latest" that fails to load.

    python -m pytest tests/test_checkpoint.py -q
"""
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

from nanochat.checkpoint import (COMPLETED, clean, git_sha, complete_steps, find_latest_step, get_rng_state,
                                 load_checkpoint, model_from_checkpoint, save_checkpoint, set_rng_state)
from nanochat.gpt import GPTConfig, build_model
from nanochat.optim import setup_optimizer

torch.set_num_threads(1)
CFG = GPTConfig(sequence_len=16, vocab_size=40, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)


def trained_model_and_optimizer():
    torch.manual_seed(0)
    model = build_model(CFG, "cpu")
    opt = setup_optimizer(model)
    for _ in range(2):
        idx = torch.randint(0, 40, (2, 9))
        model(idx[:, :-1], idx[:, 1:]).backward()
        opt.step()
        model.zero_grad(set_to_none=True)
    return model, opt


def test_round_trip_is_exact(tmp_path):
    model, opt = trained_model_and_optimizer()
    meta = dict(model_config=CFG.to_dict(), args=dict(depth=2), loop=dict(smooth_loss=1.5))
    save_checkpoint(str(tmp_path), 7, model, opt, meta, rank_state=dict(loader=dict(pos=3, epoch=1)))
    assert find_latest_step(str(tmp_path)) == 7
    assert sorted(os.listdir(tmp_path / "step_000007")) == [
        COMPLETED, "meta.json", "model.pt", "optim_rank000.pt", "state_rank000.pt"]
    model_state, optim_state, rank_state, meta2 = load_checkpoint(str(tmp_path))
    assert meta2["step"] == 7 and meta2["loop"]["smooth_loss"] == 1.5 and meta2["world_size"] == 1
    assert rank_state == dict(loader=dict(pos=3, epoch=1))
    for k, v in model.state_dict().items():
        assert torch.equal(model_state[k], v)
    # the optimizer state round-trips into a fresh optimizer
    model2, _ = model_from_checkpoint(str(tmp_path), "cpu")
    opt2 = setup_optimizer(model2)
    opt2.load_state_dict(optim_state)
    for p, q in zip(model.parameters(), model2.parameters()):
        for key, val in opt.state[p].items():
            assert (torch.equal(opt2.state[q][key], val) if torch.is_tensor(val) else opt2.state[q][key] == val)
    idx = torch.randint(0, 40, (2, 8))
    assert torch.equal(model2(idx), model(idx))


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), np.random.randn()) == first


def test_latest_ignores_and_clean_removes_incomplete(tmp_path):
    d = str(tmp_path)
    model, _ = trained_model_and_optimizer()
    for step in (1, 2, 3):
        save_checkpoint(d, step, model, meta=dict(model_config=CFG.to_dict()))
    os.makedirs(tmp_path / "step_000009")  # a crash after the rename, before COMPLETED
    os.makedirs(tmp_path / ".tmp_step_000010")  # a crash while writing
    assert find_latest_step(d) == 3
    clean(d, keep_last=2)
    assert sorted(os.listdir(d)) == ["step_000002", "step_000003"]
    save_checkpoint(d, 4, model, meta=dict(model_config=CFG.to_dict()), keep_last=2)
    assert complete_steps(d) == [3, 4]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint.*base_train"):
        load_checkpoint(str(tmp_path / "nothing"))


@pytest.mark.parametrize("name", ["model.pt", "meta.json", "optim_rank000.pt"])
def test_damaged_file_is_a_clear_error_naming_it(tmp_path, name):
    """A complete step whose file was later truncated (disk full, a partial copy): the error names the file and
    says what to do, instead of a bare zip or JSON decoding error."""
    model, opt = trained_model_and_optimizer()
    save_checkpoint(str(tmp_path), 3, model, opt, dict(model_config=CFG.to_dict()))
    path = tmp_path / "step_000003" / name
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{name} cannot be read .*damaged; delete .*step_000003"):
        load_checkpoint(str(tmp_path))


# -----------------------------------------------------------------------------
# SIGKILL while saving: a forked child (cheap: torch is already imported) saves in a loop until killed


def saver(d, progress_fd):
    cfg = GPTConfig(sequence_len=16, vocab_size=4096, n_layer=2, n_head=2, n_kv_head=2, n_embd=128)
    model = build_model(cfg, "cpu")  # ~2.6 MB of weights: a save takes long enough to be hit mid-way
    step = (find_latest_step(d) or 0) + 1
    while True:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))  # the weights tell which step they belong to
        save_checkpoint(d, step, model, meta=dict(model_config=cfg.to_dict()), keep_last=2)
        os.write(progress_fd, b".")  # one byte per completed save
        step += 1


def test_sigkill_during_save_never_breaks_latest(tmp_path):
    d = str(tmp_path / "ckpt")
    rng = random.Random(0)
    git_sha()  # cached before forking, so the children spend their time saving, not running git
    t0 = time.perf_counter()
    save_checkpoint(str(tmp_path / "probe"), 1, build_model(GPTConfig(sequence_len=16, vocab_size=4096, n_layer=2,
                    n_head=2, n_kv_head=2, n_embd=128), "cpu"))
    t_save = time.perf_counter() - t0  # scale the kill times to this machine's (current) speed
    seen = set()
    for kill in range(30):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            try:
                os.close(r)
                saver(d, w)
            finally:
                os._exit(1)
        os.close(w)
        if kill % 2 == 0:
            os.read(r, 1)  # every other time, let one save complete first: progress despite a loaded machine
        time.sleep(rng.uniform(0.0, 1.5 * t_save))  # then kill at a random moment of a save
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        step = find_latest_step(d)
        if step is None:
            continue
        model, meta = model_from_checkpoint(d, "cpu")
        assert meta["step"] == step
        assert all(torch.all(p == step) for p in model.parameters())
        seen.add(step)
        # a crash may leave debris (.tmp_*, a step dir without COMPLETED), which is ignored and later cleaned
        assert all(n.startswith((".tmp_step_", "step_")) for n in os.listdir(d))
    assert len(seen) >= 10  # the kills landed at many different points of progress


def test_format_1_checkpoint_loads_as_the_same_model(tmp_path, monkeypatch):
    # format 1 (before adjacent-pair rotary) paired head dim i with i + D/2; loading reorders c_q / c_k rows
    import json
    import nanochat.gpt as gpt

    def half_split_rotary(x, rope):  # the format-1 rotation, written out
        cos, sin = rope
        d = x.size(-1) // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)

    torch.manual_seed(0)
    old = build_model(CFG, "cpu")
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0, 0.3)
    idx = torch.randint(0, 40, (2, 8))
    with monkeypatch.context() as m:
        m.setattr(gpt, "apply_rotary", half_split_rotary)
        m.setattr(gpt, "rotary_factors", lambda cos, sin: (cos, sin))
        want = old(idx)
    save_checkpoint(str(tmp_path), 3, old, meta=dict(model_config=CFG.to_dict()))
    meta_path = tmp_path / "step_000003" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["format"]
    meta_path.write_text(json.dumps(meta))
    new, _ = model_from_checkpoint(str(tmp_path), "cpu")
    torch.testing.assert_close(new(idx), want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(old(idx), want, atol=1e-3)  # without the reordering it would be another model
    with pytest.raises(RuntimeError, match="cannot be resumed"):
        load_checkpoint(str(tmp_path))
