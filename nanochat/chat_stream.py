"""
One assistant turn, token by token, as display events: what chat_cli prints and what chat_web streams.

The engine yields token ids; some are special (tool calls, tool outputs, thinking, the end of the turn).
A front end wants text it can show as it arrives, and it wants to know which *kind* of text it is, so that a
tool call or a thinking span is shown distinctly instead of being silently hidden or mixed into the answer.

    turn = TurnDecoder(tokenizer)
    for token in tokens:
        for event, kind, text in turn.push(token):   # ("start"|"delta"|"end", kind, text)
            ...
    for event, kind, text in turn.finish(): ...
    turn.parts          # [{"type": "text"|"python"|"python_output"|"think", "text": str}, ...]
    turn.stopped        # True when the model ended the turn itself (<|assistant_end|> or <|bos|>)

kind is one of "text", "python" (a calculator call), "python_output" (the tool's answer, forced by the engine)
or "think" (an s1-style thinking span, arXiv 2501.19393): the same part types as the tokenizer's
conversations, so `turn.parts` can go straight back into the history for the next turn.

Text is emitted only in complete UTF-8 characters (nanochat.engine.StreamDecoder): an emoji split over
several byte tokens comes out whole, never as U+FFFD halves.

`inline_markup(event, kind, text)` is the plain-text form used by the web API: tool calls, tool outputs and
thinking wrapped in <tool>...</tool>, <output>...</output>, <think>...</think> markers inside the assistant text.
"""
from nanochat.engine import StreamDecoder

# -----------------------------------------------------------------------------
# which special token opens / closes which kind of span

_OPENERS = {"<|python_start|>": "python", "<|output_start|>": "python_output", "<|think_start|>": "think"}
_CLOSERS = {"<|python_end|>": "python", "<|output_end|>": "python_output", "<|think_end|>": "think"}
_STOPS = ("<|assistant_end|>", "<|bos|>")


class TurnDecoder:
    """Token ids of one assistant turn -> (event, kind, text) events and the turn's parts."""

    def __init__(self, tokenizer):
        self.decoder = StreamDecoder(tokenizer)
        sid = tokenizer.encode_special
        self.openers = {sid(s): k for s, k in _OPENERS.items()}
        self.closers = {sid(s): k for s, k in _CLOSERS.items()}
        self.stops = {sid(s) for s in _STOPS}
        self.specials = {sid(s) for s in tokenizer.get_special_tokens()}
        self.kind = "text"  # the kind of span we are in
        self.parts = []
        self.stopped = False
        self.num_tokens = 0

    def _append(self, kind, text):
        if not text:
            return []
        if self.parts and self.parts[-1]["type"] == kind:
            self.parts[-1]["text"] += text
        else:
            self.parts.append({"type": kind, "text": text})
        return [("delta", kind, text)]

    def _switch(self, kind):
        """Close the current span (flushing any held-back bytes into it) and open `kind`."""
        events = self._append(self.kind, self.decoder.flush())
        if self.kind != "text":
            events.append(("end", self.kind, ""))
        self.kind = kind
        if kind != "text":
            events.append(("start", kind, ""))
        return events

    def push(self, token):
        """Events caused by one more token. Tokens after the end of the turn are ignored."""
        if self.stopped:
            return []
        self.num_tokens += 1
        if token in self.stops:
            self.stopped = True
            return self._switch("text")
        if token in self.openers:
            return self._switch(self.openers[token])
        if token in self.closers:
            return self._switch("text") if self.closers[token] == self.kind else []
        if token in self.specials:
            return []  # e.g. <|user_start|> from a confused model: nothing to show
        return self._append(self.kind, self.decoder.push(token))

    def finish(self):
        """Close whatever is open at the end of generation (e.g. the token budget ran out mid-thought)."""
        return self._switch("text")


# -----------------------------------------------------------------------------
# plain-text markup for tool calls, tool outputs and thinking

MARKUP = {"python": ("<tool>", "</tool>"), "python_output": ("<output>", "</output>"), "think": ("<think>", "</think>")}


def inline_markup(event, kind, text):
    """The text an event contributes to the plain-text form of a turn."""
    if kind == "text" or event == "delta":
        return text
    return MARKUP[kind][0] if event == "start" else MARKUP[kind][1]


def render_part(part):
    if part["type"] == "text":
        return part["text"]
    start, end = MARKUP[part["type"]]
    return start + part["text"] + end
