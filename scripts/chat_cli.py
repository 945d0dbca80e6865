"""
Chat with a nanochat checkpoint in the terminal: a REPL with streaming output, or one shot with -p.

    python -m scripts.chat_cli                         # sft checkpoint, REPL (/clear starts over, /quit or Ctrl-D ends)
    python -m scripts.chat_cli -p "What is 12*3?"      # one reply, then exit
    python -m scripts.chat_cli --source base --step 2000 --temperature 0 --max-tokens 128
    (GPU: picked automatically; --device cpu to force the CPU. No torchrun: one process is enough.)

Tool calls, tool outputs and thinking are shown distinctly, never hidden: in brackets
("[calculator: 12*3][result: 36]", "[thinking] ... [/thinking]") and, on a colour terminal, dimmed/coloured.
Ctrl-C during a reply stops that reply (what was written so far stays in the conversation).
"""
import argparse
import os
import sys

import torch

from nanochat.chat_stream import TurnDecoder

# -----------------------------------------------------------------------------
# how each kind of span looks: (opening text, closing text, ANSI style)

SPANS = {
    "python": ("[calculator: ", "]", "\033[36m"),  # cyan
    "python_output": ("[result: ", "]", "\033[33m"),  # yellow
    "think": ("[thinking] ", " [/thinking]", "\033[2m"),  # dim
}
RESET, USER_STYLE = "\033[0m", "\033[1m"


class Printer:
    """Writes TurnDecoder events to a stream as they arrive, bracketed and (optionally) coloured."""

    def __init__(self, out, color):
        self.out = out
        self.color = color

    def _style(self, kind):
        return SPANS[kind][2] if self.color and kind in SPANS else ""

    def event(self, event, kind, text):
        if event == "start":
            self.out.write(self._style(kind) + SPANS[kind][0])
        elif event == "end":
            self.out.write(SPANS[kind][1] + (RESET if self.color else ""))
        else:
            self.out.write(text)
        self.out.flush()


# -----------------------------------------------------------------------------
# one assistant turn


def reply(engine, tokenizer, messages, args, printer, context_len):
    """Stream the next assistant turn for `messages`; returns its parts (for the history), or None if too long."""
    prompt = tokenizer.render_for_completion({"messages": messages})
    room = context_len - len(prompt)
    if room < 1:
        print(f"\n(the conversation is {len(prompt)} tokens, over the model's context of {context_len}; "
              f"type /clear to start over)", file=sys.stderr)
        return None
    turn = TurnDecoder(tokenizer)
    steps = engine.generate(prompt, num_samples=1, max_tokens=min(args.max_tokens, room),
                            temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    try:
        for column, _ in steps:
            for e in turn.push(column[0]):
                printer.event(*e)
            if turn.stopped:
                break
    except KeyboardInterrupt:  # Ctrl-C: stop this reply, keep the REPL
        printer.out.write(" [stopped]")
    finally:
        steps.close()
    for e in turn.finish():
        printer.event(*e)
    printer.out.write("\n")
    printer.out.flush()
    args.seed += 1  # the next reply samples differently, yet a whole session is reproducible from --seed
    return turn.parts


# -----------------------------------------------------------------------------
# main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Chat with a nanochat checkpoint in the terminal.")
    p.add_argument("--source", default="sft", help="checkpoint stage: base|mid|sft|rl|rft|cft|dpo|distill")
    p.add_argument("--tag", default=None, help="checkpoint tag (default: the newest under the stage)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest complete one)")
    p.add_argument("--device", default="", help="cpu|cuda|mps (default: autodetect)")
    p.add_argument("-p", "--prompt", default=None, help="answer this one prompt and exit (no REPL)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=50, help="sample only among the k most likely tokens")
    p.add_argument("--max-tokens", type=int, default=512, help="longest reply in tokens")
    p.add_argument("--seed", type=int, default=42, help="random seed of the first reply (then +1 per reply)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="colour tool calls and thinking (auto: when stdout is a terminal and NO_COLOR is unset)")
    args = p.parse_args(argv)
    if args.temperature < 0 or args.top_k < 1 or args.max_tokens < 1:
        p.error("--temperature must be >= 0, --top-k >= 1 and --max-tokens >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    from nanochat.checkpoint import load_model
    from nanochat.common import resolve_device_type
    from nanochat.engine import Engine
    device = resolve_device_type(args.device, flag="--device")
    try:
        model, tokenizer, meta = load_model(args.source, device, args.tag, args.step)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    engine = Engine(model, tokenizer)
    context_len = model.config.sequence_len
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    printer = Printer(sys.stdout, color)

    if args.prompt is not None:
        reply(engine, tokenizer, [{"role": "user", "content": args.prompt}], args, printer, context_len)
        return

    print(f"nanochat {args.source}/{meta['tag']} step {meta.get('step')} on {device} "
          f"({model.num_params():,} params). /clear starts over, /quit or Ctrl-D exits.")
    messages = []
    while True:
        try:
            text = input(f"\n{USER_STYLE if color else ''}You:{RESET if color else ''} ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        command = text.strip()
        if not command:
            continue
        if command in ("/quit", "/exit"):
            return
        if command == "/clear":
            messages = []
            print("(new conversation)")
            continue
        messages.append({"role": "user", "content": text})
        print("nanochat: ", end="", flush=True)
        parts = reply(engine, tokenizer, messages, args, printer, context_len)
        if parts is None:
            messages.pop()
        else:
            messages.append({"role": "assistant", "content": parts})


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
