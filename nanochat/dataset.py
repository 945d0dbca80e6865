"""
Pretraining text shards: download FineWeb-EDU online, build an English corpus offline, iterate documents.

Every shard is a parquet file with one `text` column and row groups of ~1k documents. Everything lives in
`<base_dir>/base_data/` next to a `manifest.json` that says which mode built the shards, where every file came
from (URL or Debian package + license), its sha256 and its document count, and which file is the validation
shard. The validation split is always the explicitly named `val_shard.parquet`, never "whatever sorts last".

    python -m nanochat.dataset -n 8 -w 4     # online: FineWeb-EDU shards 0..7 + the val shard (GPU boxes)
    python -m nanochat.dataset --local       # offline: ~45 MB of English from Debian doc/text packages (< 2 min)
    python -m nanochat.dataset --local-dir D # offline, from your own directory of .txt/.rst/.html/.pod/.md files

Online shards: karpathy/fineweb-edu-100b-shuffle on the Hugging Face hub (FineWeb-EDU, arXiv:2406.17557,
ODC-By 1.0), ~250M characters each; shard index 1822 (the last) is saved as `val_shard.parquet`. Set
NANOCHAT_DATA_URL (or --base-url) to fetch the same file names from a mirror.

Offline corpus: `apt-get download` fetches Debian packages of English documentation and prose (cached in
base_data/debs/), `dpkg-deb --fsys-tarfile` streams their files (no install, no root), and we strip the
markup (reStructuredText, HTML, POD, AsciiDoc), normalize whitespace, cut paragraph groups of ~1-5k characters
into documents, drop exact duplicates, shuffle with a fixed seed and hold out ~1.5% as the validation shard.
Without apt it falls back to text already on the machine (/usr/share/doc, /usr/share/common-licenses).

DDP: `iter_documents(..., rank, world_size)` numbers the row groups of a split globally across its shards and
gives rank r those with `global_index % world_size == r`: ranks read disjoint documents, together all of
them, and stay balanced even when a shard has fewer row groups than there are ranks.
"""
import os
import re
import sys
import glob
import gzip
import json
import time
import random
import shutil
import hashlib
import logging
import argparse
import tarfile
import tempfile
import subprocess
from html.parser import HTMLParser
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from nanochat.common import get_base_dir

logger = logging.getLogger("nanochat")

# -----------------------------------------------------------------------------
# locations, names and the manifest

HF_BASE_URL = "https://huggingface.co/datasets/karpathy/fineweb-edu-100b-shuffle/resolve/main"
MAX_SHARD = 1822                      # the hub has shard_00000 .. shard_01822
VAL_SHARD = "val_shard.parquet"       # the one validation file, in every mode
ROWS_PER_GROUP = 1024                 # documents per parquet row group (the unit of DDP sharding and resume)


def data_dir(base_dir=None):
    d = os.path.join(base_dir or get_base_dir(), "base_data")
    os.makedirs(d, exist_ok=True)
    return d


def shard_name(index):
    return f"shard_{index:05d}.parquet"


def manifest_path(ddir):
    return os.path.join(ddir, "manifest.json")


def read_manifest(ddir):
    path = manifest_path(ddir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_manifest(ddir, manifest):
    tmp = manifest_path(ddir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, manifest_path(ddir))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_shards(split, ddir=None):
    """Paths of the parquet files of `split` ("train" or "val"), in training order."""
    assert split in ("train", "val"), f"split must be 'train' or 'val', got {split!r}"
    ddir = ddir or data_dir()
    if split == "val":
        path = os.path.join(ddir, VAL_SHARD)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no validation shard {path}; build the data first with "
                                    f"`python -m nanochat.dataset --local` (offline) or `-n N` (online)")
        return [path]
    paths = sorted(glob.glob(os.path.join(ddir, "shard_*.parquet")))
    if not paths:
        raise FileNotFoundError(f"no training shards in {ddir}; build the data first with "
                                f"`python -m nanochat.dataset --local` (offline) or `-n N` (online)")
    return paths

# -----------------------------------------------------------------------------
# reading shards


def open_shard(path):
    """pq.ParquetFile, or a one-sentence error naming the file when it is truncated or not parquet at all."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path} is not a readable parquet file ({e}); it is probably a truncated download: "
                         f"delete it and rerun `python -m nanochat.dataset`") from None


def read_row_group(pf, rg):
    """The `text` column of row group `rg` of an open shard, as a list of str."""
    return pf.read_row_group(rg, columns=["text"]).column("text").to_pylist()


def rank_row_groups(split, rank=0, world_size=1, ddir=None):
    """
    [(shard_index, row_group_index, num_rows)] that `rank` owns, in reading order. Row groups are numbered
    globally across the shards of the split (g = row groups of earlier shards + index in this shard) and rank r
    owns those with g % world_size == r: disjoint, together complete, and balanced even when a shard has fewer
    row groups than there are ranks. Only parquet footers are read. Empty shards are skipped with a warning.
    """
    owned, g = [], 0
    for si, path in enumerate(list_shards(split, ddir)):
        md = open_shard(path).metadata
        if md.num_rows == 0:
            logger.warning(f"skipping empty shard {path}")
        for rg in range(md.num_row_groups):
            if (g + rg) % world_size == rank and md.row_group(rg).num_rows > 0:
                owned.append((si, rg, md.row_group(rg).num_rows))
        g += md.num_row_groups
    return owned


def iter_row_groups(split, start=(0, 0), rank=0, world_size=1, ddir=None):
    """
    Yield (shard_index, row_group_index, texts) for this rank's row groups (see rank_row_groups), one pass,
    from `start` = (shard_index, row_group_index) on. Unreadable shards raise naming the file.
    """
    paths, pf, open_si = list_shards(split, ddir), None, None
    for si, rg, _ in rank_row_groups(split, rank, world_size, ddir):
        if (si, rg) < tuple(start):
            continue
        if si != open_si:
            pf, open_si = open_shard(paths[si]), si
        yield si, rg, read_row_group(pf, rg)


def iter_documents(split, start=(0, 0), rank=0, world_size=1, batch=None, ddir=None):
    """
    One pass over this rank's documents of `split`: single strings when batch is None (what the tokenizer
    trainer wants), else lists of up to `batch` strings (what a batch encoder wants).
    """
    for _, _, texts in iter_row_groups(split, start, rank, world_size, ddir):
        if batch is None:
            yield from texts
        else:
            for i in range(0, len(texts), batch):
                yield texts[i:i + batch]


def write_shard(path, texts, rows_per_group=ROWS_PER_GROUP):
    """Write texts as a parquet shard atomically (tmp file, then rename)."""
    table = pa.table({"text": pa.array(texts, type=pa.string())})
    tmp = path + ".tmp"
    pq.write_table(table, tmp, row_group_size=rows_per_group, compression="zstd")
    os.replace(tmp, path)

# -----------------------------------------------------------------------------
# online: download FineWeb-EDU shards


def base_url():
    return os.environ.get("NANOCHAT_DATA_URL", HF_BASE_URL).rstrip("/")


class DownloadError(RuntimeError):
    pass


def check_reachable(url, timeout=10):
    """Fail fast (one request, no retries) when the shard host cannot be reached at all."""
    import requests
    try:
        requests.head(url, timeout=timeout, allow_redirects=True)
    except requests.RequestException as e:
        raise DownloadError(f"cannot reach {url.split('/resolve/')[0]} ({type(e).__name__}); without internet "
                            f"build the offline corpus instead: `python -m nanochat.dataset --local`") from None


def download_file(url, dest, retries=5, backoff=1.0, timeout=30):
    """
    Download url to dest with retries and exponential backoff (1, 2, 4, ... s). Bytes go to dest + ".tmp";
    only a file whose size matches Content-Length (when sent) and that opens as parquet is renamed to dest,
    so a file named dest is always complete. Returns (bytes, sha256). HTTP 4xx fails at once.
    """
    import requests
    tmp = dest + ".tmp"
    for attempt in range(retries):
        try:
            with requests.get(url, stream=True, timeout=timeout) as r:
                if 400 <= r.status_code < 500:
                    raise DownloadError(f"{url} answered HTTP {r.status_code}; check the shard index "
                                        f"(0..{MAX_SHARD}) and the base URL (--base-url / NANOCHAT_DATA_URL)")
                r.raise_for_status()
                expected = r.headers.get("Content-Length")
                h, n = hashlib.sha256(), 0
                with open(tmp, "wb") as f:
                    for chunk in r.iter_content(chunk_size=1 << 20):
                        f.write(chunk)
                        h.update(chunk)
                        n += len(chunk)
            if expected is not None and n != int(expected):
                raise IOError(f"got {n} bytes of {expected}")
            open_shard(tmp)  # raises on a file that is not parquet
            os.replace(tmp, dest)
            return n, h.hexdigest()
        except DownloadError:
            raise
        except (requests.RequestException, IOError, ValueError) as e:
            wait = backoff * 2 ** attempt
            logger.warning(f"{os.path.basename(dest)}: attempt {attempt + 1}/{retries} failed ({e}); "
                           f"retrying in {wait:.0f}s")
            if attempt + 1 < retries:
                time.sleep(wait)
    raise DownloadError(f"giving up on {url} after {retries} attempts; the partial file is {tmp}, rerun to retry")


def download(num_shards, workers=4, url=None, with_val=True, retries=5, backoff=1.0, ddir=None):
    """Fetch shard_00000 .. shard_{num_shards-1} (+ shard 1822 as val_shard.parquet); skip complete files."""
    ddir = ddir or data_dir()
    os.makedirs(ddir, exist_ok=True)
    url = (url or base_url()).rstrip("/")
    assert 0 < num_shards <= MAX_SHARD, f"-n must be in 1..{MAX_SHARD} (shard {MAX_SHARD} is the val shard)"
    manifest = read_manifest(ddir) or {"mode": "online", "source": url, "train": [], "val": None}
    if manifest.get("mode") != "online":
        raise DownloadError(f"{ddir} holds the offline corpus (manifest mode={manifest.get('mode')!r}); point "
                            f"NANOCHAT_BASE_DIR elsewhere or delete its shards before downloading FineWeb-EDU")
    jobs = [(i, shard_name(i)) for i in range(num_shards)] + ([(MAX_SHARD, VAL_SHARD)] if with_val else [])
    todo = [(i, name) for i, name in jobs if not os.path.exists(os.path.join(ddir, name))]
    if todo:
        check_reachable(f"{url}/{shard_name(todo[0][0])}")

    def fetch(job):
        i, name = job
        n, sha = download_file(f"{url}/{shard_name(i)}", os.path.join(ddir, name), retries, backoff)
        print(f"downloaded {name} ({n / 1e6:.1f} MB)", flush=True)
        return name
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fetch, todo))
    # record every complete file (also ones an earlier interrupted run finished but never recorded)
    train = {e["file"]: e for e in manifest["train"]}
    for i, name in jobs:
        path = os.path.join(ddir, name)
        entry = {"file": name, "url": f"{url}/{shard_name(i)}", "bytes": os.path.getsize(path),
                 "sha256": sha256_file(path), "docs": open_shard(path).metadata.num_rows}
        if name == VAL_SHARD:
            manifest["val"] = entry
        else:
            train[name] = entry
    manifest["train"] = [train[k] for k in sorted(train)]
    manifest.update(source=url, dataset="FineWeb-EDU (karpathy/fineweb-edu-100b-shuffle)", license="ODC-By 1.0",
                    val_note=f"val_shard.parquet is hub shard {MAX_SHARD} (the last one)")
    write_manifest(ddir, manifest)
    return ddir

# -----------------------------------------------------------------------------
# offline: cleaning markup into plain paragraphs

RST_EXPLICIT = re.compile(r"^(\s*)\.\.(?:\s+(?:([\w:.+-]+)::(.*)|.*))?$")
RST_DROP_BODY = {"index", "toctree", "include", "raw", "image", "figure", "only", "highlight", "module",
                 "currentmodule", "moduleauthor", "sectionauthor", "kernel-doc", "csv-table", "list-table",
                 "literalinclude", "tabularcolumns", "contents", "c:namespace", "cssclass", "flat-table"}
ADORNMENT = re.compile(r"^([=\-~`^\"'*+#:._<>/|])\1{2,}$")  # title underlines, block delimiters: 3+ of one char
TABLE_RULE = re.compile(r"^[+|][-=+|: ]*[+|]$|^=+( +=+)+$")
RST_INLINE = [
    (re.compile(r":[\w:.+-]+:`[!~]?([^`<]*?)\s*<[^`>]*>`"), r"\1"),  # :role:`title <target>`
    (re.compile(r":[\w:.+-]+:`[!~]?([^`]*)`"), r"\1"),                # :role:`text`
    (re.compile(r"`([^`<]+?)\s*<[^`>]+>`__?"), r"\1"),               # `text <url>`_
    (re.compile(r"``([^`]+)``"), r"\1"),                              # ``literal``
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),                          # `ref`_ or `interpreted`
    (re.compile(r"\*\*([^*\n]+)\*\*"), r"\1"),                        # **strong**
    (re.compile(r"\s+::$"), ""),                                      # "text. ::" -> "text."
    (re.compile(r"(\S)::$"), r"\1:"),                                 # "example::" -> "example:"
]


def clean_rst(text):
    out, skip_indent = [], None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:  # inside the body of a dropped directive or comment
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
            out.append("")
        m = RST_EXPLICIT.match(line)
        if m:
            name = m.group(2)
            if name is None or name in RST_DROP_BODY or name.endswith("function") or name.startswith("c:"):
                skip_indent = indent  # comments, targets, substitutions, index entries: drop with their body
            continue  # other directives (note, code-block, versionadded): drop the marker, keep the body
        s = line.strip()
        if s == "::" or ADORNMENT.match(s) or TABLE_RULE.match(s):
            continue
        for pattern, repl in RST_INLINE:
            line = pattern.sub(repl, line)
        out.append(line)
    return "\n".join(out)


class _HTMLText(HTMLParser):
    SKIP_TAGS = {"script", "style", "head", "nav", "noscript", "svg", "button", "form"}
    SKIP_CLASSES = {"navheader", "navfooter", "toc", "sphinxsidebar", "related", "footer", "header", "breadcrumb"}
    BLOCK = {"p", "div", "br", "li", "dt", "dd", "tr", "table", "pre", "blockquote", "section", "ul", "ol", "hr",
             "h1", "h2", "h3", "h4", "h5", "h6", "title", "article", "dl"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip_tag, self.skip_depth, self.pre = [], None, 0, 0

    def handle_starttag(self, tag, attrs):
        if self.skip_tag:
            self.skip_depth += tag == self.skip_tag
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in self.SKIP_TAGS or classes & self.SKIP_CLASSES:
            self.skip_tag, self.skip_depth = tag, 1
            return
        if tag in self.BLOCK and not (self.parts and self.parts[-1] == "- "):  # keep "- " with its item text
            self.parts.append("\n\n" if tag not in ("br", "li", "dt", "dd", "tr") else "\n")
        if tag == "li":
            self.parts.append("- ")
        self.pre += tag == "pre"

    def handle_endtag(self, tag):
        if self.skip_tag:
            self.skip_depth -= tag == self.skip_tag
            if self.skip_depth == 0:
                self.skip_tag = None
            return
        if tag in self.BLOCK:
            self.parts.append("\n\n")
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data):
        if self.skip_tag:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith(("\n", "- ")):
                data = data.lstrip()  # no indentation from the HTML source at line starts
        self.parts.append(data)


def clean_html(text):
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


def _pod_code(m):
    code, body = m.group(1), m.group(2)
    if code == "E":
        return POD_ESCAPES.get(body, "")
    if code in "XZ":
        return ""  # index entries and zero-width markers
    if code == "L":  # L<text|target>, L<name/"section">
        return body.split("|")[0] if "|" in body else body.replace('/"', ': ').strip('"')
    return body


def clean_pod(text):
    out, in_begin = [], False
    for line in text.splitlines():
        if re.match(r"^=[a-zA-Z]", line):
            cmd, _, rest = line[1:].partition(" ")
            in_begin = cmd == "begin" or (in_begin and cmd != "end")
            if cmd.startswith("head"):
                out.append(rest)
            elif cmd == "item":
                out.append("- " + rest.lstrip("*").strip() if rest.strip() not in ("", "*") else "-")
            continue
        if not in_begin:
            out.append(line)
    text = "\n".join(out)
    text = re.sub(r"([A-Z])<<+\s+(.*?)\s+>>+", lambda m: _pod_code(m), text, flags=re.S)
    for _ in range(4):  # nested codes like B<C<x>>
        text = re.sub(r"([A-Z])<([^<>]*)>", _pod_code, text)
    return text


ASCIIDOC_DROP = re.compile(r"^(\[\[.*\]\]|\[[\w ,=\"'-]*\]|:[\w-]+:.*|(include|ifdef|ifndef|endif)::.*|//.*)$")
ASCIIDOC_INLINE = [
    (re.compile(r"linkgit:([\w.-]+)\[(\d)\]"), r"\1(\2)"),
    (re.compile(r"(?:link|https?):\S*?\[([^\]]*)\]"), r"\1"),
    (re.compile(r"\{litdd\}"), "--"), (re.compile(r"\{tilde\}"), "~"), (re.compile(r"\{caret\}"), "^"),
    (re.compile(r"\{empty\}|\{nbsp\}"), ""),
    (re.compile(r"(?<![\w`])`([^`\n]+)`(?![\w`])"), r"\1"),
    (re.compile(r"(?<![\w'])'([^'\n]+)'(?![\w'])"), r"\1"),
    (re.compile(r"(?<![\w+])\+([^+\n]+)\+(?![\w+])"), r"\1"),
    (re.compile(r"^(=+)\s+(.*?)(\s+\1)?$"), r"\2"),
    (re.compile(r"(\S)::$"), r"\1:"),
]


def clean_asciidoc(text):
    out = []
    for line in text.splitlines():
        s = line.strip()
        if ADORNMENT.match(s) or ASCIIDOC_DROP.match(s) or s == "+":
            continue
        for pattern, repl in ASCIIDOC_INLINE:
            line = pattern.sub(repl, line)
        out.append(line)
    return "\n".join(out)


def clean_fortune(text):
    return re.sub(r"^%\s*$", "", text, flags=re.M)  # fortunes are separated by lines holding a single '%'


CLEANERS = {"rst": clean_rst, "html": clean_html, "pod": clean_pod, "asciidoc": clean_asciidoc,
            "fortune": clean_fortune, "plain": lambda t: t}


def format_of(path):
    """Markup format from a file name (after any .gz): rst, html, pod, plain."""
    name = path[:-3] if path.endswith(".gz") else path
    if name.endswith((".rst", ".rst.txt")):
        return "rst"
    if name.endswith((".html", ".htm", ".xhtml")):
        return "html"
    if name.endswith((".pod", ".pm")):
        return "pod"
    return "plain"


def normalize(text):
    """Tabs to spaces, no control characters, no trailing spaces, paragraphs separated by one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f\u00ad]", "", text)
    text = re.sub(r"[ \u00a0]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")

# -----------------------------------------------------------------------------
# offline: documents from cleaned text

MIN_DOC, TARGET_DOC, MAX_DOC = 1000, 3000, 5000  # characters


def split_documents(text):
    """Group consecutive paragraphs into documents of ~1-5k characters (long paragraphs are cut at lines)."""
    pieces = []
    for para in text.split("\n\n"):
        while len(para) > MAX_DOC:  # cut at the last newline (else space) before MAX_DOC
            cut = para.rfind("\n", 0, MAX_DOC)
            cut = cut if cut > MIN_DOC else (para.rfind(" ", 0, MAX_DOC) if para.rfind(" ", 0, MAX_DOC) > 0 else MAX_DOC)
            pieces.append(para[:cut])
            para = para[cut:].lstrip()
        if para.strip():
            pieces.append(para)
    docs, cur, n = [], [], 0
    for p in pieces:
        if cur and n + len(p) > MAX_DOC and n >= MIN_DOC:
            docs.append("\n\n".join(cur))
            cur, n = [], 0
        cur.append(p)
        n += len(p) + 2
        if n >= TARGET_DOC:
            docs.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        tail = "\n\n".join(cur)
        if docs and len(tail) < MIN_DOC // 5:
            docs[-1] += "\n\n" + tail  # a short tail belongs with what came before it
        else:
            docs.append(tail)
    return docs


def looks_like_prose(doc):
    """Drop tables of contents, index pages and symbol soup: short lines or few letters."""
    if len(doc) < 200:
        return False
    lines = [line for line in doc.split("\n") if line.strip()]
    letters = sum(c.isalpha() for c in doc)
    return len(doc) / max(1, len(lines)) >= 25 and letters / len(doc) >= 0.5

# -----------------------------------------------------------------------------
# offline: where the text comes from

# (package, regex of member paths to read, regex of member paths to skip, format or None = from the file name)
DEB_SOURCES = [
    ("python3.11-doc", r"/html/_sources/.*\.rst\.txt$", r"whatsnew/changelog", "rst"),
    ("linux-doc-6.1", r"/html/_sources/.*\.rst\.txt$", r"/translations/|/userspace-api/media/", "rst"),
    ("perl-doc", r"/pod/.*\.pod$", r"perl5\d+delta", "pod"),
    ("postgresql-doc-15", r"/html/.*\.html$", r"/release-", "html"),
    ("git-doc", r"/git-doc/.*\.txt$", r"RelNotes", "asciidoc"),
    ("debian-handbook", r"/html/en-US/.*\.html$", r"/(index|ix01|pr\d+)\.html$", "html"),
    ("debian-reference-en", r"\.en\.html$", r"/index\.en\.html$", "html"),
    ("debian-policy", r"/(policy|perl-policy|menu-policy|debconf_specification)\.txt\.gz$", None, "plain"),
    ("developers-reference", r"/developers-reference/[\w-]+\.html$", r"/(index|search|developers-reference)\.html$", "html"),
    ("maint-guide", r"maint-guide\.en\.txt\.gz$", None, "plain"),
    ("debian-faq", r"/FAQ/.*\.en\.html$", r"/index\.en\.html$", "html"),
    ("jargon-text", r"jargon\.txt\.gz$", None, "plain"),
    ("gnu-standards", r"\.text\.gz$", None, "plain"),
    ("dict-devil", r"devil\.dict\.dz$", None, "plain"),
    ("fortunes", r"/games/fortunes/[\w-]+$", None, "fortune"),
]
FALLBACK_DIRS = ["/usr/share/doc", "/usr/share/common-licenses"]
TEXT_SUFFIXES = (".txt", ".rst", ".md", ".html", ".htm", ".pod", ".text")


def fetch_debs(packages, deb_dir):
    """`apt-get download` the packages not already cached in deb_dir; returns {package: path}."""
    os.makedirs(deb_dir, exist_ok=True)

    def cached(pkg):
        found = sorted(glob.glob(os.path.join(deb_dir, f"{pkg}_*.deb")))
        return found[-1] if found else None
    missing = [p for p in packages if cached(p) is None]
    if missing:
        if shutil.which("apt-get") is None:
            raise RuntimeError("apt-get not found")
        with tempfile.TemporaryDirectory() as tmp:  # download elsewhere: a half-written .deb never lands in the cache
            r = subprocess.run(["apt-get", "download", *missing], cwd=tmp, capture_output=True, text=True)
            if r.returncode != 0:  # one unknown package fails the whole call: retry one by one, keep what works
                for pkg in missing:
                    r = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
                    if r.returncode != 0:
                        logger.warning(f"apt-get download {pkg} failed: {r.stderr.strip()[-200:]}")
            for f in glob.glob(os.path.join(tmp, "*.deb")):
                shutil.move(f, os.path.join(deb_dir, os.path.basename(f)))
    return {p: cached(p) for p in packages if cached(p)}


def copyright_license(text):
    """The License: of the `Files: *` stanza of a machine-readable debian/copyright, else None."""
    m = re.search(r"^Files:\s*\*\s*\n(?:[^\n]+\n)*?License:\s*([^\n]+)", text, re.M)
    return m.group(1).strip() if m else None


def read_deb(deb_path, package, include, exclude):
    """Stream (member path, bytes) of the matching files of a .deb, and its copyright text."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb_path], stdout=subprocess.PIPE)
    files, copyright_text = [], ""
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            if name.endswith(f"/usr/share/doc/{package}/copyright"):
                copyright_text = tar.extractfile(member).read().decode("utf-8", "replace")
            elif re.search(include, name) and not (exclude and re.search(exclude, name)):
                files.append((name, tar.extractfile(member).read()))
    if proc.wait() != 0:
        raise RuntimeError(f"dpkg-deb could not read {deb_path}")
    return files, copyright_text


def decode(name, data):
    if name.endswith((".gz", ".dz")):
        data = gzip.decompress(data)
    return data.decode("utf-8", "replace")


def documents_from_files(files, fmt=None):
    """Clean and split a list of (name, bytes) into (documents, chars before cleaning)."""
    docs, raw = [], 0
    for name, data in sorted(files):
        text = decode(name, data)
        raw += len(text)
        docs.extend(d for d in split_documents(normalize(CLEANERS[fmt or format_of(name)](text))) if looks_like_prose(d))
    return docs, raw


def collect_from_debs(deb_dir, ddir):
    """[(source record, documents)] from the Debian packages; copyright files are copied next to the shards."""
    debs = fetch_debs([s[0] for s in DEB_SOURCES], deb_dir)
    out = []
    os.makedirs(os.path.join(ddir, "licenses"), exist_ok=True)
    for package, include, exclude, fmt in DEB_SOURCES:
        if package not in debs:
            continue
        files, copyright_text = read_deb(debs[package], package, include, exclude)
        docs, raw = documents_from_files(files, fmt)
        with open(os.path.join(ddir, "licenses", f"{package}.copyright"), "w") as f:
            f.write(copyright_text)
        record = {"name": package, "kind": "debian-package", "deb": os.path.basename(debs[package]),
                  "deb_sha256": sha256_file(debs[package]), "format": fmt, "files": len(files),
                  "license": copyright_license(copyright_text) or f"see licenses/{package}.copyright",
                  "copyright_file": f"licenses/{package}.copyright", "raw_chars": raw}
        out.append((record, docs))
    return out


def collect_from_dirs(dirs):
    """[(source record, documents)] from text-like files under local directories (the no-apt fallback)."""
    out = []
    for root in dirs:
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                path = os.path.join(dirpath, fn)
                plain = fn[:-3] if fn.endswith(".gz") else fn
                if fn.startswith(("changelog", "copyright")) or os.path.islink(path):
                    continue
                if plain.endswith(TEXT_SUFFIXES) or plain.startswith("README") or "common-licenses" in root:
                    with open(path, "rb") as f:
                        files.append((os.path.relpath(path, root), f.read()))
        docs, raw = documents_from_files(files)
        out.append(({"name": root, "kind": "directory", "files": len(files), "raw_chars": raw,
                     "license": "as stated in each file (local text, not for redistribution as a dataset)"}, docs))
    return out

# -----------------------------------------------------------------------------
# offline: build the shards


def build_local_corpus(ddir=None, from_dirs=None, seed=0, val_fraction=0.015, shard_chars=10_000_000,
                       rows_per_group=ROWS_PER_GROUP, max_chars=60_000_000, force=False):
    """
    Build train shards + val_shard.parquet + manifest.json in ddir from Debian packages (or from `from_dirs`,
    or from the machine's own docs when apt fails). Deterministic: same inputs and seed, same shards.
    """
    ddir = ddir or data_dir()
    os.makedirs(ddir, exist_ok=True)
    old = read_manifest(ddir)
    if old and old.get("mode") == "local" and not force and all(
            os.path.exists(os.path.join(ddir, e["file"])) for e in old["train"] + [old["val"]]):
        print(f"offline corpus already built in {ddir} (pass --force to rebuild)")
        return ddir
    if old and old.get("mode") == "online" and not force:
        raise RuntimeError(f"{ddir} holds downloaded FineWeb-EDU shards; pass --force to replace them with the "
                           f"offline corpus, or point NANOCHAT_BASE_DIR elsewhere")
    t0 = time.time()
    mode = "dirs"
    if from_dirs:
        sources = collect_from_dirs(from_dirs)
    else:
        try:
            sources, mode = collect_from_debs(os.path.join(ddir, "debs"), ddir), "debian-packages"
        except Exception as e:  # no apt, no network to the mirror, no dpkg-deb: use what the machine has
            logger.warning(f"Debian packages unavailable ({e}); falling back to {FALLBACK_DIRS}")
            sources = []
        if not any(docs for _, docs in sources):
            sources, mode = collect_from_dirs(FALLBACK_DIRS), "fallback-local-docs"
    # exact dedup in deterministic (source, file) order, then a seeded shuffle
    seen, docs, total = set(), [], 0
    for record, source_docs in sources:
        kept = 0
        for d in source_docs:
            h = hashlib.sha1(d.encode()).digest()
            if h in seen or total >= max_chars:
                continue
            seen.add(h)
            docs.append(d)
            total += len(d)
            kept += 1
        record.update(docs=kept, chars=sum(len(d) for d in docs[len(docs) - kept:]))
    if not docs:
        raise RuntimeError("no text found to build the offline corpus from")
    random.Random(seed).shuffle(docs)
    n_val = max(1, round(len(docs) * val_fraction))
    val, train = docs[:n_val], docs[n_val:]
    # train shards of ~shard_chars characters each; val in small row groups so up to 16 ranks all get some
    for f in glob.glob(os.path.join(ddir, "shard_*.parquet")) + glob.glob(os.path.join(ddir, VAL_SHARD)):
        os.remove(f)
    shards, cur, n = [], [], 0
    for d in train:
        cur.append(d)
        n += len(d)
        if n >= shard_chars:
            shards.append(cur)
            cur, n = [], 0
    if cur:
        shards.append(cur)
    entries = []
    for i, texts in enumerate(shards):
        path = os.path.join(ddir, shard_name(i))
        write_shard(path, texts, rows_per_group)
        entries.append({"file": shard_name(i), "docs": len(texts), "chars": sum(map(len, texts)),
                        "sha256": sha256_file(path)})
    val_path = os.path.join(ddir, VAL_SHARD)
    write_shard(val_path, val, max(1, min(rows_per_group, -(-len(val) // 16))))
    manifest = {"mode": "local", "built_from": mode, "seed": seed, "val_fraction": val_fraction,
                "doc_chars": [MIN_DOC, TARGET_DOC, MAX_DOC], "docs": len(docs), "chars": total,
                "train": entries,
                "val": {"file": VAL_SHARD, "docs": len(val), "chars": sum(map(len, val)), "sha256": sha256_file(val_path)},
                "sources": [record for record, _ in sources]}
    write_manifest(ddir, manifest)
    print(f"offline corpus ({mode}): {len(docs):,} documents, {total / 1e6:.1f} M chars, {len(shards)} train shards "
          f"+ {VAL_SHARD} ({len(val)} docs) in {ddir} [{time.time() - t0:.0f}s]")
    return ddir


def hub_reachable(timeout=5):
    try:
        check_reachable(f"{base_url()}/{shard_name(0)}", timeout)
        return True
    except DownloadError:
        return False


def ensure_dataset(online=None, num_shards=8, workers=4):
    """
    Make sure base_data/ has shards. online=True: FineWeb-EDU (fails if the hub is unreachable); False: the
    offline corpus; None: FineWeb-EDU when the hub answers, else the offline corpus (announced).
    """
    ddir = data_dir()
    if online is None:
        online = hub_reachable()
        print(f"data: {'FineWeb-EDU from the hub' if online else 'hub unreachable, using the offline corpus'}")
    return download(num_shards, workers, ddir=ddir) if online else build_local_corpus(ddir)

# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="Download FineWeb-EDU shards or build the offline corpus.")
    parser.add_argument("-n", "--num-shards", type=int, default=8, help="number of FineWeb-EDU train shards to download")
    parser.add_argument("-w", "--workers", type=int, default=4, help="parallel download workers")
    parser.add_argument("--base-url", type=str, default=None, help="shard host (default $NANOCHAT_DATA_URL or the HF hub)")
    parser.add_argument("--no-val", action="store_true", help="do not download the validation shard")
    parser.add_argument("--local", action="store_true", help="build the offline corpus from Debian packages (no hub)")
    parser.add_argument("--local-dir", type=str, action="append", default=None,
                        help="build the offline corpus from this directory of text files (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed of the offline corpus")
    parser.add_argument("--force", action="store_true", help="rebuild / replace existing shards of the other mode")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.local or args.local_dir:
            build_local_corpus(from_dirs=args.local_dir, seed=args.seed, force=args.force)
        else:
            download(args.num_shards, args.workers, url=args.base_url, with_val=not args.no_val)
            print(f"shards in {data_dir()}")
    except (DownloadError, RuntimeError, ValueError, AssertionError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
