"""
scripts/chat_cli.py on the tiny checkpoints (tests/tiny_model.py): one-shot -p, the REPL with /clear and
multi-turn history, tool calls shown distinctly (brackets, colour), and clear errors.
Run: python -m pytest tests/test_chat_cli.py -q
"""
import io
import os
import subprocess
import sys

import pytest
import torch

from tests.tiny_model import REPLIES, REPO, tiny_base_dir
from scripts.chat_cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def base_dir():
    return tiny_base_dir()


@pytest.fixture
def env(base_dir, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", base_dir)


def run_cli(capsys, monkeypatch, argv, stdin="", stderr=False):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    main(["--source", "sft", "--device", "cpu", "--temperature", "0", *argv])
    captured = capsys.readouterr()
    return captured.out if not stderr else (captured.out, captured.err)


def test_one_shot_prompt(env, capsys, monkeypatch):
    out = run_cli(capsys, monkeypatch, ["-p", "hi"])
    assert out == "Hello 🙂 I am nanochat 🚀!\n"


def test_tool_call_shown_distinctly(env, capsys, monkeypatch):
    out = run_cli(capsys, monkeypatch, ["-p", "what is 12*3?", "--color", "never"])
    assert out == "Let me compute. [calculator: 12*3][result: 36] It is 36 ✅\n"
    out = run_cli(capsys, monkeypatch, ["-p", "what is 12*3?", "--color", "always"])
    assert out == "Let me compute. \033[36m[calculator: 12*3]\033[0m\033[33m[result: 36]\033[0m It is 36 ✅\n"


def test_repl_clear_and_history(env, capsys, monkeypatch):
    # without /clear the second question is asked with the first exchange as history (an unseen context for
    # the tiny model); after /clear it is a fresh single-turn conversation, which it answers by heart
    out = run_cli(capsys, monkeypatch, ["--color", "never"], "hi\n/clear\nwhat is 12*3?\n\n/quit\nnot reached\n")
    turns = out.split("nanochat: ")[1:]
    assert turns[0].startswith("Hello 🙂 I am nanochat 🚀!\n") and "(new conversation)" in turns[0]
    assert turns[1].startswith("Let me compute. [calculator: 12*3][result: 36] It is 36 ✅\n")
    assert len(turns) == 2  # /quit ended the session; the blank line was ignored


def test_history_is_sent_with_tool_parts(env, capsys, monkeypatch):
    """The second turn's prompt is the rendered two-turn conversation, the tool call and output as parts."""
    from nanochat import engine as engine_mod
    from nanochat.tokenizer import get_tokenizer
    prompts = []
    original = engine_mod.Engine.generate

    def spy(self, tokens, *a, **kw):
        prompts.append(list(tokens))
        return original(self, tokens, *a, **kw)

    monkeypatch.setattr(engine_mod.Engine, "generate", spy)
    run_cli(capsys, monkeypatch, ["--color", "never", "--max-tokens", "40"], "what is 12*3?\nthanks\n")
    tok = get_tokenizer()
    history = [{"role": "user", "content": "what is 12*3?"},
               {"role": "assistant", "content": REPLIES["what is 12*3?"]},
               {"role": "user", "content": "thanks"}]
    assert prompts == [tok.render_for_completion({"messages": history[:1]}),
                       tok.render_for_completion({"messages": history})]


def test_context_overflow_is_a_clear_message(env, capsys, monkeypatch):
    out, err = run_cli(capsys, monkeypatch, ["--color", "never"], "x " * 300 + "\nhi\n", stderr=True)
    assert "over the model's context of 128" in err and "/clear" in err
    assert "Hello 🙂 I am nanochat 🚀!" in out  # the over-long message was dropped, the next one answered


def test_missing_checkpoint_is_one_clear_line(base_dir):
    env = dict(os.environ, NANOCHAT_BASE_DIR=base_dir)
    r = subprocess.run([sys.executable, "-m", "scripts.chat_cli", "--source", "rl", "-p", "hi"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "no complete rl checkpoint" in r.stderr and "Traceback" not in r.stderr
