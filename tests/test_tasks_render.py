"""
Tests that every task's conversations render through the tokenizer (nanochat/tokenizer.py) into ids and a
mask that say what we mean: the decoded ids equal a hand-built reference string, the mask selects exactly
the assistant's learnable text (tool calls and thinking yes, tool outputs no), and a multiple-choice answer
is a single letter token, the same token that labels the choice in the question.

    python -m pytest tests/test_tasks_render.py -q
"""
import pytest

from tasks.common import render_mc
from tasks.gsm8k import gsm8k_conversation
from tasks.identity import Identity
from tasks.mcq import MCQ
from tasks.spelling import Spelling
from tasks.synthif import SynthIF
from tasks.synthmath import SynthMath

tokenizer = pytest.importorskip("nanochat.tokenizer")

GSM = ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
       "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18")
WRAP = {"python": ("<|python_start|>", "<|python_end|>"), "python_output": ("<|output_start|>", "<|output_end|>"),
        "think": ("<|think_start|>", "<|think_end|>")}


def sample_conversations():
    return {
        "gsm8k": gsm8k_conversation("Janet's ducks lay 16 eggs per day...", GSM),
        "mc": render_mc("Which planet is closest to the Sun?", ["Venus", "Mercury", "Earth", "Mars"], 1),
        "synthmath": SynthMath("train")[1],
        "synthmath_think": SynthMath("train", think=True)[2],
        "mcq": MCQ("test")[0],
        "spelling": Spelling("train")[0],
        "identity": Identity("train")[5],
        "synthif": SynthIF("test")[3],
    }


@pytest.fixture(scope="module")
def tok():
    corpus = []
    for conv in sample_conversations().values():
        for m in conv["messages"]:
            corpus.append(m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"]))
    n_special = len(tokenizer.SPECIAL_TOKENS)
    return tokenizer.Tokenizer.train_from_iterator(iter(corpus * 5), vocab_size=256 + n_special + 200)


def reference(conv):
    """(full text, learnable text) written out by hand from the conversation, following the mask rule."""
    full, learn = "<|bos|>", ""
    for m in conv["messages"]:
        if m["role"] == "user":
            full += f"<|user_start|>{m['content']}<|user_end|>"
            continue
        full += "<|assistant_start|>"
        parts = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
        for p in parts:
            start, end = WRAP.get(p["type"], ("", ""))
            piece = f"{start}{p['text']}{end}"
            full += piece
            learn += "" if p["type"] == "python_output" else piece
        full += "<|assistant_end|>"
        learn += "<|assistant_end|>"
    return full, learn


@pytest.mark.parametrize("name", list(sample_conversations()))
def test_ids_and_mask_match_the_reference(tok, name):
    conv = sample_conversations()[name]
    ids, mask = tok.render_conversation(conv)
    full, learn = reference(conv)
    assert len(ids) == len(mask)
    assert tok.decode(ids) == full
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == learn


def test_tool_outputs_are_not_learned_but_tool_calls_are(tok):
    ids, mask = tok.render_conversation(sample_conversations()["gsm8k"])
    out_start, out_end = tok.encode_special("<|output_start|>"), tok.encode_special("<|output_end|>")
    py_start = tok.encode_special("<|python_start|>")
    inside = False
    for i, m in zip(ids, mask):
        inside = inside or i == out_start
        if inside:
            assert m == 0
        if i == out_end:
            inside = False
        if i == py_start:
            assert m == 1
    assert ids.count(py_start) == 2 and ids.count(out_start) == 2


def test_mc_answer_is_one_letter_token_seen_in_the_question(tok):
    conv = sample_conversations()["mc"]
    ids, mask = tok.render_conversation(conv)
    learned = [i for i, m in zip(ids, mask) if m]
    assert len(learned) == 2 and learned[1] == tok.encode_special("<|assistant_end|>")
    letter_id = learned[0]
    assert tok.decode([letter_id]) == "B"
    # the same token labels choice B in the question: what chat_eval compares at the answer position
    assert all(len(tok.encode(letter)) == 1 for letter in conv["letters"])
    user_ids = tok.encode(conv["messages"][0]["content"])
    assert all(tok.encode(letter)[0] in user_ids for letter in conv["letters"])


def test_render_for_completion_ends_at_assistant_start(tok):
    conv = sample_conversations()["synthmath"]
    prompt = tok.render_for_completion(conv)
    assert prompt[-1] == tok.encode_special("<|assistant_start|>")
    assert tok.decode(prompt) == f"<|bos|><|user_start|>{conv['messages'][0]['content']}<|user_end|><|assistant_start|>"
