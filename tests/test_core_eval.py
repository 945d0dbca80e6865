"""
Tests for nanochat/core_eval.py and nanochat/loss_eval.py on small fixtures with known answers: an oracle
"model" that knows exactly which texts are true, a byte tokenizer, hand-computed accuracies and CORE, and the
batched scoring checked against a naive per-option computation with a real (random) GPT.

    python -m pytest tests/test_core_eval.py -q
"""
import json
import math

import torch
import torch.nn.functional as F

from nanochat.core_eval import (common_prefix_len, common_suffix_len, evaluate_core, evaluate_item,
                                render_prompts, token_spans)
from nanochat.gpt import GPTConfig, build_model
from nanochat.loss_eval import evaluate_bpb

torch.set_num_threads(1)
BOS = 256


class ByteTokenizer:
    def get_bos_token_id(self):
        return BOS

    def encode(self, text, prepend=None, append=None, num_threads=1):
        if isinstance(text, list):
            return [self.encode(t, prepend) for t in text]
        return ([prepend] if prepend is not None else []) + list(text.encode())


class Oracle(torch.nn.Module):
    """Predicts the next byte with certainty iff the current segment (after BOS or a blank line) extends one of
    the `truths`; uniform otherwise. So a true option has loss ~0 and a false one ~ln(257) per token."""

    def __init__(self, truths):
        super().__init__()
        self.truths = truths
        self.config = GPTConfig(sequence_len=4096, vocab_size=257, n_layer=1, n_head=1, n_kv_head=1, n_embd=8)

    def forward(self, idx):
        B, T = idx.shape
        logits = torch.zeros(B, T, 257)
        for b in range(B):
            ids = idx[b].tolist()
            for t in range(T):
                seg = bytes(x for x in ids[:t + 1] if x != BOS).decode(errors="replace").split("\n\n")[-1]
                for truth in self.truths:
                    if truth.startswith(seg) and len(truth) > len(seg):
                        logits[b, t, ord(truth[len(seg)])] = 50.0
                        break
        return logits


MC = [dict(query="Sky color?", choices=["green", "blue"], gold=1),
      dict(query="Grass color?", choices=["green", "red", "blue"], gold=0),
      dict(query="Snow color?", choices=["white", "black"], gold=0)]  # the oracle believes "black"
SCHEMA = [dict(context_options=["The cat", "The rock"], continuation="purred.", gold=0),
          dict(context_options=["A fish", "A bird"], continuation="flew away.", gold=1)]
LM = [dict(context="Two plus two is", continuation="four"), dict(context="The sun is a", continuation="star")]
TRUTHS = ["Sky color?\nAnswer: blue", "Grass color?\nAnswer: green", "Snow color?\nAnswer: black",
          "The cat purred.", "A bird flew away.", "Two plus two is four", "The sun is a planet"]


def test_render_prompts_exact_strings():
    p = render_prompts(MC[0], "multiple_choice", "\nAnswer: ", [MC[1]])
    assert p == ["Grass color?\nAnswer: green\n\nSky color?\nAnswer: green",
                 "Grass color?\nAnswer: green\n\nSky color?\nAnswer: blue"]
    assert render_prompts(SCHEMA[0], "schema", " ", []) == ["The cat purred.", "The rock purred."]
    assert render_prompts(LM[0], "language_modeling", " ", [LM[1]]) == [
        "The sun is a star\n\nTwo plus two is", "The sun is a star\n\nTwo plus two is four"]


def test_spans():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4, 5]]) == 2
    assert common_suffix_len([[9, 1, 2], [8, 8, 1, 2]]) == 2
    seqs, spans = token_spans([[1, 2, 3], [1, 2, 4, 5]], "multiple_choice")
    assert spans == [(2, 3), (2, 4)]
    seqs, spans = token_spans([[7, 1, 2], [8, 8, 1, 2]], "schema")
    assert spans == [(1, 3), (2, 4)]
    seqs, spans = token_spans([[1, 2], [1, 2, 3, 4]], "language_modeling")
    assert seqs == [[1, 2, 3, 4]] and spans == [(2, 4)]


def test_items_against_known_answers():
    model, tok = Oracle(TRUTHS), ByteTokenizer()
    got = [evaluate_item(model, tok, it, "multiple_choice", "\nAnswer: ", [], "cpu", 4096) for it in MC]
    assert got == [True, True, False]
    got = [evaluate_item(model, tok, it, "schema", " ", [], "cpu", 4096) for it in SCHEMA]
    assert got == [True, True]
    got = [evaluate_item(model, tok, it, "language_modeling", " ", [], "cpu", 4096) for it in LM]
    assert got == [True, False]  # "star" is not what the oracle would write


def test_core_is_mean_of_centered_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    d = tmp_path / "eval_data" / "core" / "olmo"
    d.mkdir(parents=True)
    tasks = [("mc", "multiple_choice", 1, "\nAnswer: ", 25.0, MC), ("sch", "schema", 0, " ", 50.0, SCHEMA),
             ("lm", "language_modeling", 0, " ", 0.0, LM)]
    index = dict(source="fixture", missing=["winograd"], tasks=[])
    for label, typ, shots, delim, base, rows in tasks:
        with open(d / f"{label}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        index["tasks"].append(dict(label=label, type=typ, num_fewshot=shots, delimiter=delim, baseline=base,
                                   file=f"{label}.jsonl"))
    (d / "tasks.json").write_text(json.dumps(index))
    out = evaluate_core(Oracle(TRUTHS), ByteTokenizer(), "cpu")
    # few-shot examples come from the oracle's truths too, so the 1-shot MC task is still 2/3
    assert out["accuracy"] == {"mc": 2 / 3, "sch": 1.0, "lm": 0.5}
    centered = {"mc": (2 / 3 - 0.25) / 0.75, "sch": 1.0, "lm": 0.5}
    assert out["centered"] == centered
    assert abs(out["core"] - sum(centered.values()) / 3) < 1e-12
    assert out["missing"] == ["winograd"]


def test_batched_scoring_matches_naive_per_option_losses():
    torch.manual_seed(0)
    model = build_model(GPTConfig(sequence_len=128, vocab_size=257, n_layer=1, n_head=2, n_kv_head=2,
                                  n_embd=32), "cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    tok = ByteTokenizer()
    for item in [dict(query="ab", choices=["cd", "efgh", "x"], gold=0),
                 dict(query="q", choices=["zz", "yyy"], gold=1)]:
        losses = []
        for choice in item["choices"]:  # naive: one unpadded forward per option, loss over the choice bytes
            ids = torch.tensor([[BOS] + list((item["query"] + " " + choice).encode())])
            n = len(choice.encode())
            lp = F.log_softmax(model(ids)[0, :-1], dim=-1)
            tgt = ids[0, 1:]
            losses.append(-lp[-n:].gather(1, tgt[-n:, None]).mean().item())
        expected = min(range(len(losses)), key=losses.__getitem__) == item["gold"]
        assert evaluate_item(model, tok, item, "multiple_choice", " ", [], "cpu", 128) == expected


def test_bits_per_byte_by_hand():
    class Fixed(torch.nn.Module):  # per-token losses we choose
        def forward(self, x, y, loss_reduction="none"):
            return torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]) * (y >= 0)

    token_bytes = torch.tensor([0, 1, 2, 3])  # token 0 is special: 0 bytes
    y = torch.tensor([[1, 2, 0], [3, -1, 1]])
    bpb = evaluate_bpb(Fixed(), iter([(y, y)]), 1, token_bytes)
    # counted: (1.0, 1 byte), (2.0, 2 bytes), (4.0, 3 bytes), (6.0, 1 byte); special and ignored excluded
    assert abs(bpb - (1 + 2 + 4 + 6) / (math.log(2) * 7)) < 1e-12
