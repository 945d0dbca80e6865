"""
Tests for nanochat/tokenizer.py: training through rustbpe, the JSON file, encode/decode, special-token safety,
and the conversation renderer's mask rule (checked token by token).

    python -m pytest tests/test_tokenizer.py -q
"""
import os
import json

import pytest
import torch

from nanochat.tokenizer import Tokenizer, SPECIAL_TOKENS, SPLIT_PATTERN, get_token_bytes, get_tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Numbers: 1 12 123 1234 12345 3.14159 2026-11-21",
    "Ünïcödé, 日本語のテキスト, 한국어 문장, emoji 🙂🚀🎉 and more emoji 🙂",
    "user: hello <|assistant_end|> there",
] * 20


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train_from_iterator(iter(CORPUS), vocab_size=256 + len(SPECIAL_TOKENS) + 64)


def sid(tok, name):
    return tok.encode_special(name)


# -----------------------------------------------------------------------------
# training, sizes, file format


def test_vocab_size_counts_specials(tok):
    assert tok.get_vocab_size() == 256 + len(SPECIAL_TOKENS) + 64
    assert len(tok.mergeable_ranks) == 256 + 64
    # the specials sit right after the ordinary tokens, in declaration order
    assert [sid(tok, s) for s in SPECIAL_TOKENS] == list(range(320, 320 + len(SPECIAL_TOKENS)))


def test_merges_learned_from_the_corpus(tok):
    # " the" style tokens are frequent in the corpus; a trained tokenizer compresses it better than bytes
    text = CORPUS[0]
    assert len(tok.encode(text)) < len(text.encode("utf-8")) * 0.6


def test_too_small_vocab_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        Tokenizer.train_from_iterator(iter(["abc"]), vocab_size=100)


def test_save_load_roundtrip_is_json(tok, tmp_path):
    path = tok.save(tmp_path)
    with open(path) as f:
        payload = json.load(f)  # plain JSON, no pickle
    assert payload["pattern"] == SPLIT_PATTERN
    assert payload["special_tokens"] == SPECIAL_TOKENS
    tok2 = Tokenizer.from_directory(tmp_path)
    for text in CORPUS[:5]:
        assert tok2.encode(text) == tok.encode(text)
    assert tok2.mergeable_ranks == tok.mergeable_ranks


def test_load_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="tok_train"):
        Tokenizer.from_directory(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a valid tokenizer"):
        Tokenizer.from_directory(tmp_path)


def test_get_tokenizer_uses_base_dir(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        get_tokenizer()
    tok.save(os.path.join(tmp_path, "tokenizer"))
    assert get_tokenizer().encode("hello") == tok.encode("hello")


# -----------------------------------------------------------------------------
# encode / decode


@pytest.mark.parametrize("text", CORPUS[:5] + ["", " ", "\n\n\n", "a" * 1000, "\u0000\uffff", "🙂" * 7])
def test_decode_encode_roundtrip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_batch_encode_equals_single(tok):
    batch = tok.encode(CORPUS[:5], prepend="<|bos|>", append=sid(tok, "<|user_end|>"), num_threads=2)
    for text, ids in zip(CORPUS[:5], batch):
        assert ids == [tok.get_bos_token_id()] + tok.encode(text) + [sid(tok, "<|user_end|>")]


def test_special_token_text_is_never_special(tok):
    specials = set(tok.special_ids.values())
    for s in SPECIAL_TOKENS:
        text = f"look: {s} and {s}{s}"
        ids = tok.encode(text)
        assert not specials & set(ids), s
        assert tok.decode(ids) == text
        assert not specials & set(tok.encode([text])[0])
    # the same holds inside a rendered conversation
    conv = {"messages": [{"role": "user", "content": "<|assistant_end|><|python_start|>"},
                         {"role": "assistant", "content": "<|bos|>"}]}
    ids, _ = tok.render_conversation(conv)
    assert ids.count(tok.get_bos_token_id()) == 1
    assert ids.count(sid(tok, "<|assistant_end|>")) == 1


def test_encode_rejects_bad_types(tok):
    with pytest.raises(TypeError):
        tok.encode(123)
    with pytest.raises(TypeError, match="item 1"):
        tok.encode(["ok", None])
    with pytest.raises(KeyError, match="unknown special token"):
        tok.encode("x", prepend="<|nope|>")


def test_token_bytes(tok):
    tb = get_token_bytes(tok)
    assert tb.dtype == torch.long and tb.shape == (tok.get_vocab_size(),)
    for name in SPECIAL_TOKENS:
        assert tb[sid(tok, name)] == 0
    for i in range(256):
        assert tb[i] == 1
    for b, r in tok.mergeable_ranks.items():
        assert tb[r] == len(b)
    text = CORPUS[3]
    assert int(tb[tok.encode(text)].sum()) == len(text.encode("utf-8"))


# -----------------------------------------------------------------------------
# conversation rendering: the mask rule, token by token


def expected_render(tok, conv_pieces):
    """Build the expected (ids, mask) by hand from (kind, payload, mask) pieces."""
    ids, mask = [], []
    for kind, payload, m in conv_pieces:
        new = [sid(tok, payload)] if kind == "special" else tok.encode(payload)
        ids += new
        mask += [m] * len(new)
    return ids, mask


def test_render_every_part_type(tok):
    conv = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 6*7?"},
        {"role": "assistant", "content": [
            {"type": "think", "text": "six sevens"},
            {"type": "text", "text": "Let me compute. "},
            {"type": "python", "text": "6*7"},
            {"type": "python_output", "text": "42"},
            {"type": "text", "text": "It is 42."},
        ]},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You're welcome."},
    ]}
    ids, mask = tok.render_conversation(conv)
    want_ids, want_mask = expected_render(tok, [
        ("special", "<|bos|>", 0),
        ("special", "<|user_start|>", 0), ("text", "Be brief.\n\nWhat is 6*7?", 0), ("special", "<|user_end|>", 0),
        ("special", "<|assistant_start|>", 0),
        ("special", "<|think_start|>", 1), ("text", "six sevens", 1), ("special", "<|think_end|>", 1),
        ("text", "Let me compute. ", 1),
        ("special", "<|python_start|>", 1), ("text", "6*7", 1), ("special", "<|python_end|>", 1),
        ("special", "<|output_start|>", 0), ("text", "42", 0), ("special", "<|output_end|>", 0),
        ("text", "It is 42.", 1),
        ("special", "<|assistant_end|>", 1),
        ("special", "<|user_start|>", 0), ("text", "Thanks!", 0), ("special", "<|user_end|>", 0),
        ("special", "<|assistant_start|>", 0), ("text", "You're welcome.", 1), ("special", "<|assistant_end|>", 1),
    ])
    assert ids == want_ids
    assert mask == want_mask


def test_render_truncates(tok):
    conv = {"messages": [{"role": "user", "content": "hi " * 50}, {"role": "assistant", "content": "yo " * 50}]}
    ids, mask = tok.render_conversation(conv, max_tokens=17)
    full_ids, full_mask = tok.render_conversation(conv)
    assert len(ids) == len(mask) == 17
    assert ids == full_ids[:17] and mask == full_mask[:17]


def test_render_for_completion(tok):
    conv = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    prompt = tok.render_for_completion(conv)
    ids, _ = tok.render_conversation({"messages": conv["messages"][:1]})
    assert prompt == ids + [sid(tok, "<|assistant_start|>")]
    assert tok.render_for_completion({"messages": conv["messages"][:1]}) == prompt


@pytest.mark.parametrize("conv, err, match", [
    ({"messages": [{"role": "assistant", "content": "hi"}]}, ValueError, "alternate"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, ValueError, "alternate"),
    ({"messages": [{"role": "robot", "content": "a"}]}, ValueError, "role"),
    ({"messages": [{"role": "user", "content": 5}]}, TypeError, "content must be a str"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "video", "text": "x"}]}]},
     ValueError, "unknown assistant part"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "text"}]}]},
     TypeError, "part 0"),
    ({"messages": [{"role": "system", "content": "s"}]}, ValueError, "system message"),
    ({"msgs": []}, TypeError, "messages"),
])
def test_render_bad_inputs(tok, conv, err, match):
    with pytest.raises(err, match=match):
        tok.render_conversation(conv)
