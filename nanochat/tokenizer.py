"""
The GPT-4-style BPE tokenizer: trained by our Rust `rustbpe`, run by `tiktoken`, stored as plain JSON.

    tok = Tokenizer.train_from_iterator(texts, vocab_size=65536)   # learn merges (Rust, parallel)
    tok.save(dir); tok = Tokenizer.from_directory(dir)              # tokenizer.json: pattern, ranks, specials
    ids = tok.encode("hello", prepend="<|bos|>")                      # fast encode via tiktoken
    ids, mask = tok.render_conversation(conversation)                 # chat rendering for SFT/RL

Training is done by rustbpe (fast, parallel); inference uses tiktoken (fast, battle-tested) built from the same
ranks, so the two always agree. The file on disk is JSON: no pickle, safe to download.

Ordinary text never turns into a special token: encoding goes through `encode_ordinary`, so a user who types
"<|assistant_end|>" gets the ids of those characters, not the special id.
"""
import os
import json
import base64
from functools import lru_cache

import tiktoken

# -----------------------------------------------------------------------------
# special tokens and the split pattern

SPECIAL_TOKENS = [
    "<|bos|>",             # every document (and every conversation) begins with it
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>",   # the assistant calls the calculator tool
    "<|output_start|>", "<|output_end|>",   # the tool's answer, forced in by the engine
    "<|think_start|>", "<|think_end|>",     # s1-style thinking span (arXiv 2501.19393), for budget forcing
]

# GPT-4's split pattern, except \p{N}{1,2} instead of \p{N}{1,3}: with small vocabularies, 3-digit groups
# waste many tokens on numbers (nanochat's choice).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1

# -----------------------------------------------------------------------------
# the Tokenizer


class Tokenizer:
    """A tiktoken Encoding plus the chat-rendering logic that every chat stage shares."""

    def __init__(self, pattern, mergeable_ranks, special_tokens=SPECIAL_TOKENS):
        self.pattern = pattern
        self.mergeable_ranks = mergeable_ranks  # dict bytes -> rank, ranks 0..N-1
        n = len(mergeable_ranks)
        self.special_ids = {s: n + i for i, s in enumerate(special_tokens)}
        self.enc = tiktoken.Encoding(
            name="nanochat", pat_str=pattern, mergeable_ranks=mergeable_ranks, special_tokens=self.special_ids,
        )
        self.bos_id = self.special_ids["<|bos|>"]

    # --- construction, saving, loading

    @classmethod
    def train_from_iterator(cls, text_iterator, vocab_size, pattern=SPLIT_PATTERN):
        """Learn BPE merges with rustbpe. vocab_size counts the special tokens too."""
        import rustbpe  # the Rust extension built by `pip install -e .`
        n_merged = vocab_size - len(SPECIAL_TOKENS)
        if n_merged < 256:
            raise ValueError(f"vocab_size={vocab_size} is too small: it must be at least "
                             f"{256 + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(text_iterator, n_merged, pattern=pattern)
        ranks = {bytes(b): r for b, r in trainer.get_mergeable_ranks()}
        return cls(trainer.get_pattern(), ranks)

    def save(self, directory):
        """Write tokenizer.json (atomically): the pattern, every token's bytes in rank order, the specials."""
        os.makedirs(directory, exist_ok=True)
        by_rank = sorted(self.mergeable_ranks.items(), key=lambda kv: kv[1])
        assert [r for _, r in by_rank] == list(range(len(by_rank))), "ranks must be 0..N-1"
        payload = {
            "format": "nanochat-tokenizer",
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            # base64 because merged tokens are arbitrary bytes (possibly partial UTF-8)
            "ranks": [base64.b64encode(b).decode("ascii") for b, _ in by_rank],
            "special_tokens": list(self.special_ids),
        }
        path = os.path.join(directory, TOKENIZER_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f)
        os.replace(tmp, path)
        return path

    @classmethod
    def from_directory(cls, directory):
        path = os.path.join(directory, TOKENIZER_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no tokenizer at {path}: train one with `python -m scripts.tok_train`")
        try:
            with open(path, encoding="utf-8") as f:
                payload = json.load(f)
            if payload.get("format") != "nanochat-tokenizer":
                raise ValueError("not a nanochat tokenizer file")
            ranks = {base64.b64decode(b): r for r, b in enumerate(payload["ranks"])}
            return cls(payload["pattern"], ranks, payload["special_tokens"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a valid tokenizer file ({e}); retrain with `python -m scripts.tok_train`")

    # --- basic encode / decode

    def get_vocab_size(self):
        return self.enc.n_vocab

    def get_special_tokens(self):
        return list(self.special_ids)

    def get_bos_token_id(self):
        return self.bos_id

    def encode_special(self, name):
        if name not in self.special_ids:
            raise KeyError(f"unknown special token {name!r}; known: {', '.join(self.special_ids)}")
        return self.special_ids[name]

    def _as_id(self, tok):
        return tok if isinstance(tok, int) else self.encode_special(tok)

    def encode(self, text, prepend=None, append=None, num_threads=8):
        """
        Encode a str (-> list[int]) or a list of str (-> list[list[int]], tokenized with num_threads threads).
        prepend/append: a token id or a special token's name, e.g. prepend="<|bos|>".
        Special-token text inside `text` is encoded as ordinary characters, never as the special id.
        """
        pre = [] if prepend is None else [self._as_id(prepend)]
        post = [] if append is None else [self._as_id(append)]
        if isinstance(text, str):
            return pre + self.enc.encode_ordinary(text) + post
        if isinstance(text, (list, tuple)):
            for i, t in enumerate(text):
                if not isinstance(t, str):
                    raise TypeError(f"encode: item {i} is {type(t).__name__}, expected str")
            rows = self.enc.encode_ordinary_batch(list(text), num_threads=num_threads)
            return [pre + row + post for row in rows]
        raise TypeError(f"encode expects str or list of str, got {type(text).__name__}")

    def decode(self, ids):
        return self.enc.decode(ids)

    def id_to_token(self, token_id):
        return self.enc.decode_single_token_bytes(token_id).decode("utf-8", errors="replace")

    # -------------------------------------------------------------------------
    # chat rendering

    def render_conversation(self, conversation, max_tokens=2048):
        """
        Render a conversation into token ids and a training mask of the same length.

        THE MASK RULE: mask = 1 exactly on the tokens the model must learn to produce, 0 on what it is given.
          1: assistant text, `<|python_start|>` + tool call + `<|python_end|>`, `<|think_start|>` + thinking +
             `<|think_end|>`, and the `<|assistant_end|>` that closes each assistant turn.
          0: `<|bos|>`, whole user turns (with their delimiters), `<|assistant_start|>`, and tool outputs with
             their `<|output_start|>`/`<|output_end|>` delimiters (the engine forces those at inference).
        A system message is folded into the first user turn (our models have no system role).
        Output is cropped to max_tokens.
        """
        messages = _fold_system(conversation)
        ids, mask = [self.bos_id], [0]

        def add(tokens, m):
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        for i, msg in enumerate(messages):
            want = "user" if i % 2 == 0 else "assistant"
            if msg["role"] != want:
                raise ValueError(f"message {i} has role {msg['role']!r}; roles must alternate user/assistant "
                                 f"starting with user (after an optional system message)")
            if want == "user":
                add([self.special_ids["<|user_start|>"]], 0)
                add(self.enc.encode_ordinary(_text_content(msg, i)), 0)
                add([self.special_ids["<|user_end|>"]], 0)
            else:
                add([self.special_ids["<|assistant_start|>"]], 0)
                for part in _assistant_parts(msg, i):
                    self._render_part(part, add)
                add([self.special_ids["<|assistant_end|>"]], 1)
        return ids[:max_tokens], mask[:max_tokens]

    def _render_part(self, part, add):
        kind, text = part["type"], part["text"]
        body = self.enc.encode_ordinary(text)
        if kind == "text":
            add(body, 1)
        elif kind in _WRAPPED_PARTS:
            start, end, m = _WRAPPED_PARTS[kind]
            add([self.special_ids[start]], m)
            add(body, m)
            add([self.special_ids[end]], m)
        else:
            raise ValueError(f"unknown assistant part type {kind!r}; expected text, python, python_output or think")

    def render_for_completion(self, conversation):
        """
        Ids that prime the model to write the next assistant turn: the conversation (dropping a final
        assistant message, if any, so an eval item with its gold answer can be passed as is) followed by
        `<|assistant_start|>`.
        """
        messages = list(conversation["messages"])
        if messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]
        if not messages:
            raise ValueError("render_for_completion needs at least one user message")
        ids, _ = self.render_conversation({"messages": messages}, max_tokens=1 << 62)
        return ids + [self.special_ids["<|assistant_start|>"]]

    def visualize(self, ids, mask):
        """Debug view: tokens the model learns in green, given tokens in grey."""
        green, grey, reset = "\033[92m", "\033[90m", "\033[0m"
        return "|".join(f"{green if m else grey}{self.id_to_token(t)}{reset}" for t, m in zip(ids, mask))


# part type -> (start token, end token, mask): tool calls and thinking are learned, tool outputs are given
_WRAPPED_PARTS = {
    "python": ("<|python_start|>", "<|python_end|>", 1),
    "python_output": ("<|output_start|>", "<|output_end|>", 0),
    "think": ("<|think_start|>", "<|think_end|>", 1),
}

# -----------------------------------------------------------------------------
# conversation validation helpers


def _fold_system(conversation):
    if not isinstance(conversation, dict) or not isinstance(conversation.get("messages"), list):
        raise TypeError("a conversation is a dict with a 'messages' list")
    messages = conversation["messages"]
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"message {i} must be a dict with role system, user or assistant, got {m!r:.80}")
    if messages and messages[0]["role"] == "system":
        if len(messages) < 2 or messages[1]["role"] != "user":
            raise ValueError("a system message must be followed by a user message")
        merged = {"role": "user", "content": _text_content(messages[0], 0) + "\n\n" + _text_content(messages[1], 1)}
        messages = [merged] + messages[2:]
    return messages


def _text_content(msg, i):
    content = msg.get("content")
    if not isinstance(content, str):
        raise TypeError(f"message {i} ({msg.get('role')}) content must be a str, got {type(content).__name__}")
    return content


def _assistant_parts(msg, i):
    content = msg.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("text"), str) or "type" not in part:
                raise TypeError(f"message {i} part {j} must be a dict with 'type' and str 'text', got {part!r:.80}")
        return content
    raise TypeError(f"message {i} (assistant) content must be a str or a list of parts, got {type(content).__name__}")


# -----------------------------------------------------------------------------
# convenience: the tokenizer of this run, and bytes per token for bits-per-byte


def get_tokenizer_dir():
    from nanochat.common import get_base_dir
    return os.path.join(get_base_dir(), "tokenizer")


@lru_cache(maxsize=4)
def _load_cached(directory, mtime):
    return Tokenizer.from_directory(directory)


def get_tokenizer(directory=None):
    """The tokenizer trained by scripts/tok_train (cached per file version)."""
    directory = directory or get_tokenizer_dir()
    path = os.path.join(directory, TOKENIZER_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no tokenizer at {path}: train one with `python -m scripts.tok_train`")
    return _load_cached(directory, os.path.getmtime(path))


def get_tokenizer_or_exit(directory=None, hint=""):
    """get_tokenizer for a script: a missing or invalid tokenizer.json is one line on stderr (plus `hint`), exit 1."""
    try:
        return get_tokenizer(directory)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}{hint}")


def get_token_bytes(tokenizer, device="cpu"):
    """LongTensor (vocab,): UTF-8 byte length of each token, 0 for special tokens (they are not text)."""
    import torch
    lengths = [0] * tokenizer.get_vocab_size()
    for b, r in tokenizer.mergeable_ranks.items():
        lengths[r] = len(b)
    return torch.tensor(lengths, dtype=torch.long, device=device)
