"""
Evaluate the trained tokenizer's compression (bytes per token, higher is better) on several kinds of text,
next to GPT-2's and GPT-4's (cl100k) tokenizers when tiktoken can load them (it downloads them, so offline they
are skipped with a note).

    python -m scripts.tok_eval

CPU only.
"""
import json
import argparse
import inspect

import tiktoken

from nanochat.report import get_report
from nanochat.tokenizer import get_tokenizer_or_exit

parser = argparse.ArgumentParser(description="Bytes per token of our tokenizer vs GPT-2 / GPT-4 on several kinds of text")
parser.add_argument("--tokenizer-dir", type=str, default="", help="tokenizer to evaluate (default: <base_dir>/tokenizer)")
parser.add_argument("--json", type=str, default="", help="also write the table to this JSON file")
args = parser.parse_args()

# -----------------------------------------------------------------------------
# the texts (written for this file, except the code sample, which is the stdlib's own source)

PROSE = """The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps out of habit
rather than need. One hundred and twelve. At the top he trimmed the wick, polished the great lens until it threw
his own tired face back at him, and watched the fishing boats turn for home. Nobody in the village remembered a
night when the light had failed, and he intended to keep it that way, storms and stiff knees notwithstanding."""

MATH = r"""Let $f(x) = 3x^2 - 12x + 7$. Completing the square gives $f(x) = 3(x-2)^2 - 5$, so the minimum is
$-5$ at $x = 2$. For the sum $\sum_{k=1}^{n} k^2 = \frac{n(n+1)(2n+1)}{6}$ we check $n=3$: $1+4+9 = 14$ and
$\frac{3 \cdot 4 \cdot 7}{6} = 14$. Solve $2x + 5 = 19$: $x = 7$. Then 48 / 6 = 8, 8 * 125 = 1000, 1000 - 1 = 999."""

NON_ENGLISH = {
    "german": "Der Zug nach Hamburg hatte wieder einmal Verspätung, und die Reisenden am Bahnsteig zuckten nur mit den Schultern.",
    "french": "Le marché du samedi matin sentait le pain chaud, les fraises mûres et le café qu'on buvait debout au comptoir.",
    "russian": "Зимой в деревне рано темнеет, и дети возвращаются из школы уже при свете фонарей.",
    "chinese": "今天早上下了一场小雨，公园里的空气特别清新，很多老人在湖边散步和打太极拳。",
    "korean": "주말마다 우리 가족은 시장에 가서 신선한 채소와 과일을 사고 작은 식당에서 점심을 먹는다.",
    "emoji": "Great job team 🎉🎉 launch went smoothly 🚀 coffee is on me ☕ see you monday 👋🙂",
}


def samples():
    import json.decoder
    yield "prose", PROSE
    yield "code", inspect.getsource(json.decoder)
    yield "math", MATH
    for name, text in NON_ENGLISH.items():
        yield name, text
    try:  # a real slice of our validation shard, when the corpus exists
        from nanochat.dataset import iter_documents
        docs = []
        for doc in iter_documents("val"):
            docs.append(doc)
            if sum(map(len, docs)) > 200_000:
                break
        yield "corpus-val", "\n".join(docs)
    except Exception as e:  # noqa: BLE001 - the corpus is optional here
        print(f"(no validation corpus sample: {e})")


# -----------------------------------------------------------------------------
# measure

ours = get_tokenizer_or_exit(args.tokenizer_dir or None)
encoders = {"ours": lambda s: ours.encode(s)}
for name in ("gpt2", "cl100k_base"):
    try:
        enc = tiktoken.get_encoding(name)
        encoders[name] = enc.encode_ordinary
    except Exception as e:  # noqa: BLE001 - tiktoken downloads these; offline it can't
        print(f"(skipping {name}: tiktoken could not load it, probably offline: {type(e).__name__})")

rows = []
for kind, text in samples():
    n_bytes = len(text.encode("utf-8"))
    row = {"text": kind, "bytes": n_bytes}
    for name, encode in encoders.items():
        ids = encode(text)
        if name == "ours":
            assert ours.decode(ids) == text, f"round trip failed on {kind}"
        row[name] = round(n_bytes / len(ids), 3)
    rows.append(row)

names = list(encoders)
lines = [f"{'text':<12} {'bytes':>8} " + " ".join(f"{n:>12}" for n in names) + "   (bytes per token)"]
lines += [f"{row['text']:<12} {row['bytes']:>8} " + " ".join(f"{row[n]:>12.3f}" for n in names) for row in rows]
print(f"vocab size: ours {ours.get_vocab_size()}")
print("\n".join(lines))
get_report().log("Tokenizer evaluation", [{"vocab size": ours.get_vocab_size()}, "```\n" + "\n".join(lines) + "\n```"])
if args.json:
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
