"""
Train the BPE tokenizer on the pretraining corpus and save it to <base_dir>/tokenizer/tokenizer.json.

    python -m scripts.tok_train                          # 65536 tokens on up to 2B chars of the train shards
    python -m scripts.tok_train --vocab-size 4096 --max-chars 20000000     # small offline default
    python -m scripts.tok_train --text-files 'docs/**/*.txt'                # any text files instead

CPU only (the Rust trainer uses every core through rayon); no GPU or torchrun needed.
"""
import os
import glob
import time
import argparse

from nanochat.report import get_report
from nanochat.tokenizer import SPECIAL_TOKENS, Tokenizer, get_tokenizer_dir, get_token_bytes

# -----------------------------------------------------------------------------
# arguments

parser = argparse.ArgumentParser(description="Train the BPE tokenizer (rustbpe) and save it as JSON")
parser.add_argument("--vocab-size", type=int, default=65536, help="vocabulary size, special tokens included")
parser.add_argument("--max-chars", type=int, default=2_000_000_000, help="stop after this many characters of text")
parser.add_argument("--doc-cap", type=int, default=10_000, help="crop each document to this many characters")
parser.add_argument("--text-files", type=str, default="", help="glob of text files to train on instead of the shards")
parser.add_argument("--out-dir", type=str, default="", help="where to save (default: <base_dir>/tokenizer)")
args = parser.parse_args()
# checked before the (long) training, so that a bad flag never costs a trained tokenizer
if args.vocab_size < 256 + len(SPECIAL_TOKENS):
    parser.error(f"--vocab-size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
if args.max_chars < 1 or args.doc_cap < 1:
    parser.error("--max-chars and --doc-cap must be >= 1")
if args.out_dir and os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
    parser.error(f"--out-dir {args.out_dir!r} exists and is not a directory")

# -----------------------------------------------------------------------------
# the text stream: capped documents, capped total


def documents():
    """Documents from --text-files, else from the train shards of nanochat.dataset."""
    if args.text_files:
        paths = sorted(glob.glob(args.text_files, recursive=True))
        if not paths:
            raise SystemExit(f"--text-files {args.text_files!r} matched no files")
        for p in paths:
            with open(p, encoding="utf-8", errors="replace") as f:
                yield f.read()
        return
    from nanochat.dataset import iter_documents
    yield from iter_documents("train")


def text_iterator():
    n_chars = 0
    for doc in documents():
        doc = doc[: args.doc_cap]
        n_chars += len(doc)
        yield doc
        if n_chars >= args.max_chars:
            return
    print(f"(the text ran out after {n_chars:,} chars, below --max-chars {args.max_chars:,})")


# -----------------------------------------------------------------------------
# train, save, report

print(f"training a {args.vocab_size}-token BPE tokenizer on up to {args.max_chars:,} chars (doc cap {args.doc_cap:,})")
t0 = time.time()
try:
    tokenizer = Tokenizer.train_from_iterator(text_iterator(), args.vocab_size)
except FileNotFoundError as e:  # no shards yet
    raise SystemExit(f"{e}\nFix: build the corpus first (`python -m nanochat.dataset --local`) or pass --text-files")
train_time = time.time() - t0
out_dir = args.out_dir or get_tokenizer_dir()
path = tokenizer.save(out_dir)
print(f"trained in {train_time:.1f}s; saved {path}")

# sanity: round trip on a tricky string, and the bytes/token table used for bits-per-byte
sample = "Hello world! 12345 ünïcödé 你好 🙂\n\n  def f(x):\n\treturn x**2  <|bos|>"
assert tokenizer.decode(tokenizer.encode(sample)) == sample, "round trip failed"
token_bytes = get_token_bytes(tokenizer)
nonzero = token_bytes[token_bytes > 0].float()
print(f"vocab {tokenizer.get_vocab_size()}, bytes/token over the vocab: mean {nonzero.mean():.2f}, "
      f"max {int(nonzero.max())}; specials: {len(tokenizer.get_special_tokens())}")
get_report().log("Tokenizer training", [vars(args), {
    "train time (s)": round(train_time, 1), "vocab size": tokenizer.get_vocab_size(), "saved to": path,
    "mean token bytes": round(float(nonzero.mean()), 3)}])
