"""
Tests of the chat training loop (nanochat/sft.py) on a tiny model, in-process:
SFT lowers the held-out loss on its task; gradient accumulation gives the same update as one big batch
(the loss is the per-token mean of the whole step); resume from a checkpoint is exact; Ctrl-C saves and
exits; the lr schedules.

    python -m pytest tests/test_sft.py -q
"""
import os
import shutil
import signal

import pytest
import torch

from nanochat.common import ComputeInfo
from nanochat.gpt import GPTConfig, build_model
from nanochat.sft import ChatTrainConfig, lr_multiplier, train_chat, val_loss
from nanochat.tokenizer import Tokenizer
from tasks.mcq import MCQ
from tasks.synthmath import SynthMath
from tests.tiny_model import small_tokenizer

CPU = ComputeInfo(False, 0, 0, 1, torch.device("cpu"), "cpu", torch.float32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tok():
    texts = [SynthMath("train", size=50)[i]["messages"][1]["content"] for i in range(50)]
    texts = ["".join(p["text"] for p in t) if isinstance(t, list) else t for t in texts]
    return small_tokenizer(texts, num_merges=128)


@pytest.fixture(autouse=True)
def base_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    return tmp_path


def tiny_model(tok, seed=0):
    torch.manual_seed(seed)
    config = GPTConfig(sequence_len=128, vocab_size=tok.get_vocab_size(), n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
    return build_model(config, "cpu", torch.float32)


def config(**kw):
    base = dict(stage="sft", model_tag="t", max_seq_len=128, device_batch_size=4, rows_per_step=8, eval_every=-1,
                eval_batches=4, init_lr_frac=1.0, keep_last=10)
    return ChatTrainConfig(**{**base, **kw})


def quiet(*args, **kwargs):
    pass


def test_sft_lowers_the_held_out_loss(tok):
    train, val = MCQ("train", size=400), MCQ("test", size=32)
    model = tiny_model(tok)
    cfg = config(num_iterations=40)
    before = val_loss(model, tok, val, cfg, "cpu")
    summary = train_chat(model, tok, train, val, cfg, CPU, log=quiet)
    assert summary["steps"] == 40 and os.path.isdir(summary["checkpoint"])
    # the MCQ answer and format are learnable: the assistant-token loss (letter + end) must drop a lot
    assert summary["val_loss"] < 0.6 * before, (before, summary["val_loss"])


def test_gradient_accumulation_equals_one_big_batch(tok):
    train = SynthMath("train", size=64)
    a, b = tiny_model(tok), tiny_model(tok)
    train_chat(a, tok, train, None, config(num_iterations=2, device_batch_size=8, model_tag="a"), CPU, log=quiet)
    train_chat(b, tok, train, None, config(num_iterations=2, device_batch_size=2, model_tag="b"), CPU, log=quiet)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("packed", [False, True])
def test_resume_is_exact(tok, base_dir, packed):
    train = SynthMath("train", size=200)
    straight = tiny_model(tok)
    train_chat(straight, tok, train, None, config(num_iterations=4, save_every=2, packed=packed, model_tag="s"),
               CPU, log=quiet)
    # a second run that only has the step-2 checkpoint of the first, resumes and finishes
    src, dst = base_dir / "checkpoints" / "sft" / "s", base_dir / "checkpoints" / "sft" / "r"
    dst.mkdir(parents=True)
    shutil.copytree(src / "step_000002", dst / "step_000002")
    resumed = tiny_model(tok, seed=1)  # different init: everything must come from the checkpoint
    summary = train_chat(resumed, tok, train, None, config(num_iterations=4, resume=True, packed=packed,
                                                           model_tag="r"), CPU, log=quiet)
    assert summary["steps"] == 4
    for (name, pa), pb in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)


def test_sigint_saves_the_step_and_exits_130(tok, base_dir):
    """Ctrl-C mid-run: the step in progress finishes, a checkpoint is saved, the process exits 130 (so a pipeline
    under `set -e` stops), the previous SIGINT handler is back, and --resume goes on from that checkpoint."""
    train = SynthMath("train", size=200)
    before = signal.getsignal(signal.SIGINT)

    def log(line):  # the signal arrives while step 2 is being logged, i.e. between two steps' work
        if line.startswith("step 00002"):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(SystemExit) as exit_info:
        train_chat(tiny_model(tok), tok, train, None, config(num_iterations=6, model_tag="c"), CPU, log=log)
    assert exit_info.value.code == 130
    assert signal.getsignal(signal.SIGINT) is before
    from nanochat.checkpoint import find_latest_step
    assert find_latest_step(str(base_dir / "checkpoints" / "sft" / "c")) == 2
    summary = train_chat(tiny_model(tok, seed=1), tok, train, None, config(num_iterations=6, model_tag="c",
                                                                           resume=True), CPU, log=quiet)
    assert summary["steps"] == 6


def test_packed_run_stops_after_one_epoch(tok):
    train = SynthMath("train", size=60)
    summary = train_chat(tiny_model(tok), tok, train, None, config(packed=True, num_epochs=1.0), CPU, log=quiet)
    # rows of 129 tokens hold >= 1 conversation each: one epoch of 60 conversations takes <= 60/8 steps
    assert 1 <= summary["steps"] <= 8
    assert summary["loader_stats"]["rows"] == summary["steps"] * 8


def test_lr_schedules_and_config_errors(tok):
    lin, wd = config(schedule="linear"), config(schedule="warmdown", warmdown_ratio=0.25)
    assert [lr_multiplier(p, lin) for p in (0, 0.5, 1)] == [1.0, 0.5, 0.0]
    assert [lr_multiplier(p, wd) for p in (0, 0.7, 0.875, 1)] == [1.0, 1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="multiple of device batch size"):
        train_chat(tiny_model(tok), tok, MCQ("train", size=40), None, config(rows_per_step=6), CPU, log=quiet)
    with pytest.raises(FileNotFoundError, match="drop --resume"):
        train_chat(tiny_model(tok), tok, MCQ("train", size=40), None, config(resume=True, model_tag="none"), CPU,
                   log=quiet)


# -----------------------------------------------------------------------------
# two gloo ranks == one process with the same rows per step


def _fp32_newton_schulz():
    # bf16 Newton-Schulz (the default on CPUs with native bf16) turns the 1e-8 float noise between a 2-rank and
    # a 1-process gradient sum into whole bf16 rounding steps of the update (~1e-4 on weights): compare in fp32
    import nanochat.optim
    nanochat.optim.newton_schulz_dtype = lambda device: torch.float32


def _ddp_worker(rank, base_dir, tok_dir, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), NANOCHAT_BASE_DIR=base_dir)
    torch.set_num_threads(1)
    _fp32_newton_schulz()
    from nanochat.common import compute_init, compute_cleanup
    ci = compute_init("cpu", seed=0)
    tok = Tokenizer.from_directory(tok_dir)
    train_chat(tiny_model(tok), tok, SynthMath("train", size=64), MCQ("test", size=8),
               config(num_iterations=3, device_batch_size=2, model_tag="ddp", embedding_lr=0.0), ci, log=quiet)
    compute_cleanup()


def test_two_gloo_ranks_match_one_process(tok, base_dir, monkeypatch):
    import socket
    import torch.multiprocessing as mp
    tok.save(str(base_dir / "tok"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(str(base_dir), str(base_dir / "tok"), port), nprocs=2, join=True)
    monkeypatch.setattr("nanochat.optim.newton_schulz_dtype", lambda device: torch.float32)  # as the workers
    single = tiny_model(tok)
    train_chat(single, tok, SynthMath("train", size=64), None, config(num_iterations=3, device_batch_size=4,
                                                                    model_tag="one", embedding_lr=0.0), CPU, log=quiet)
    ddp = torch.load(base_dir / "checkpoints" / "sft" / "ddp" / "step_000003" / "model.pt", weights_only=True)
    # the embedding is frozen (lr 0) here: its early Adam steps are ~lr * sign(g), which turns float noise in the
    # order of the gradient sums (1e-8 on every other weight) into ~1e-4 differences on a few of its entries
    for name, p in single.named_parameters():
        torch.testing.assert_close(ddp[name], p.detach(), rtol=1e-4, atol=1e-6, msg=name)
