"""
Tests for nanochat.dataset: shard iteration and DDP partition, bad shards, the downloader against a local
HTTP server, and the offline corpus builder on a small fixture directory.

    python -m pytest tests/test_dataset.py -q
"""
import os
import json
import threading
import functools
import http.server

import pyarrow.parquet as pq
import pytest

from nanochat import dataset
from nanochat.dataset import (write_shard, iter_documents, iter_row_groups, list_shards, download, download_file,
                              DownloadError, build_local_corpus, clean_rst, clean_html, clean_pod, clean_asciidoc,
                              split_documents, MAX_DOC)


def make_split(ddir, n_shards=3, docs_per_shard=50, rows_per_group=8, empty_shard=None):
    """Train shards + val shard of unique documents 'doc s-i ...'; returns every train document."""
    os.makedirs(ddir, exist_ok=True)
    all_docs = []
    for s in range(n_shards):
        docs = [] if s == empty_shard else [f"doc {s}-{i} " + "word " * (i % 7) for i in range(docs_per_shard)]
        write_shard(os.path.join(ddir, f"shard_{s:05d}.parquet"), docs, rows_per_group)
        all_docs += docs
    write_shard(os.path.join(ddir, "val_shard.parquet"), [f"val {i}" for i in range(20)], 4)
    return all_docs

# -----------------------------------------------------------------------------
# iteration


def test_iter_documents_reads_everything_in_order(tmp_path):
    docs = make_split(str(tmp_path))
    got = list(iter_documents("train", ddir=str(tmp_path)))
    assert got == docs
    batches = list(iter_documents("train", batch=5, ddir=str(tmp_path)))
    assert all(1 <= len(b) <= 5 for b in batches) and sum(batches, []) == docs
    assert list(iter_documents("val", ddir=str(tmp_path))) == [f"val {i}" for i in range(20)]


def test_val_is_the_named_shard_not_the_last_file(tmp_path):
    make_split(str(tmp_path))
    write_shard(os.path.join(str(tmp_path), "shard_99999.parquet"), ["late"], 8)  # sorts last; still train
    assert list_shards("val", str(tmp_path)) == [os.path.join(str(tmp_path), "val_shard.parquet")]
    assert list_shards("train", str(tmp_path))[-1].endswith("shard_99999.parquet")


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_read_disjoint_row_groups_covering_the_split(tmp_path, world_size):
    docs = make_split(str(tmp_path))
    per_rank = [list(iter_documents("train", rank=r, world_size=world_size, ddir=str(tmp_path)))
                for r in range(world_size)]
    seen = [d for part in per_rank for d in part]
    assert len(seen) == len(set(seen)) == len(docs)      # disjoint ...
    assert set(seen) == set(docs)                         # ... and together everything
    # and the rule is the documented one: global row group index % world_size == rank (7 groups per shard here)
    for si, rg, texts in iter_row_groups("train", rank=1, world_size=world_size, ddir=str(tmp_path)):
        assert (7 * si + rg) % world_size == 1


def test_more_ranks_than_row_groups_per_shard_still_balance(tmp_path):
    make_split(str(tmp_path), n_shards=4, docs_per_shard=16, rows_per_group=8)  # 2 row groups per shard, 8 total
    counts = [len(list(iter_documents("train", rank=r, world_size=4, ddir=str(tmp_path)))) for r in range(4)]
    assert counts == [16, 16, 16, 16]


def test_start_resumes_at_shard_and_row_group(tmp_path):
    docs = make_split(str(tmp_path), rows_per_group=8)
    got = list(iter_documents("train", start=(1, 2), ddir=str(tmp_path)))
    assert got == docs[50 + 16:]  # shard 1 starts at doc 50, row group 2 at row 16


def test_empty_shard_is_skipped_with_a_warning(tmp_path, caplog):
    docs = make_split(str(tmp_path), empty_shard=1)
    with caplog.at_level("WARNING", logger="nanochat"):
        got = list(iter_documents("train", ddir=str(tmp_path)))
    assert got == docs and len(docs) == 100
    assert "empty shard" in caplog.text and "shard_00001.parquet" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "not_parquet"])
def test_bad_shard_raises_naming_the_file(tmp_path, damage):
    make_split(str(tmp_path))
    path = os.path.join(str(tmp_path), "shard_00001.parquet")
    if damage == "truncate":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    else:
        open(path, "w").write("<html>404 not found</html>")
    with pytest.raises(ValueError, match="shard_00001.parquet.*truncated download"):
        list(iter_documents("train", ddir=str(tmp_path)))


def test_missing_data_names_the_build_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="--local"):
        list_shards("train", str(tmp_path))

# -----------------------------------------------------------------------------
# the downloader, against http.server on 127.0.0.1


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; the first `cut_first` GETs of each file send half the bytes and hang up."""
    cut_first = 0
    hits = {}

    def log_message(self, *args):
        pass

    def do_GET(self):
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        path = self.translate_path(self.path)
        if n <= self.cut_first and os.path.isfile(path):
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))  # promise everything ...
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])           # ... deliver half, then close
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "remote"
    root.mkdir()
    for i in (0, 1, dataset.MAX_SHARD):
        write_shard(str(root / dataset.shard_name(i)), [f"remote {i}-{j}" for j in range(30)], 10)
    FlakyHandler.hits, FlakyHandler.cut_first = {}, 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(FlakyHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_download_verifies_and_records_in_manifest(server, tmp_path):
    url, root = server
    ddir = str(tmp_path / "data")
    download(2, workers=2, url=url, ddir=ddir, backoff=0.01)
    assert sorted(os.listdir(ddir)) == ["manifest.json", "shard_00000.parquet", "shard_00001.parquet", "val_shard.parquet"]
    assert open(os.path.join(ddir, "val_shard.parquet"), "rb").read() == (root / "shard_01822.parquet").read_bytes()
    m = json.load(open(os.path.join(ddir, "manifest.json")))
    assert m["mode"] == "online" and m["val"]["file"] == "val_shard.parquet" and m["val"]["docs"] == 30
    assert [e["file"] for e in m["train"]] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert list(iter_documents("val", ddir=ddir))[0] == f"remote {dataset.MAX_SHARD}-0"
    # a rerun downloads nothing
    before = dict(FlakyHandler.hits)
    download(2, workers=2, url=url, ddir=ddir)
    assert FlakyHandler.hits == before


def test_interrupted_download_leaves_only_tmp_and_rerun_completes(server, tmp_path):
    url, root = server
    ddir = str(tmp_path / "data")
    os.makedirs(ddir)
    dest = os.path.join(ddir, "shard_00000.parquet")
    FlakyHandler.cut_first = 10  # every attempt is cut short
    with pytest.raises(DownloadError, match="giving up"):
        download_file(f"{url}/shard_00000.parquet", dest, retries=2, backoff=0.01)
    assert not os.path.exists(dest) and os.path.exists(dest + ".tmp")
    FlakyHandler.hits, FlakyHandler.cut_first = {}, 1  # the first attempt is cut, the retry succeeds
    n, _ = download_file(f"{url}/shard_00000.parquet", dest, retries=3, backoff=0.01)
    assert FlakyHandler.hits["/shard_00000.parquet"] == 2
    assert n == os.path.getsize(dest) and pq.ParquetFile(dest).metadata.num_rows == 30
    assert not os.path.exists(dest + ".tmp")


def test_404_fails_at_once_with_a_clear_message(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404.*shard index"):
        download_file(f"{url}/shard_00007.parquet", str(tmp_path / "x.parquet"), retries=5, backoff=10)
    assert FlakyHandler.hits["/shard_00007.parquet"] == 1  # no retries (and no 10 s backoff) on a 404


def test_unreachable_host_names_the_offline_option(tmp_path):
    # port 9 on 127.0.0.1: nothing listens, the connection is refused at once
    with pytest.raises(DownloadError, match="--local"):
        download(1, url="http://127.0.0.1:9", ddir=str(tmp_path))
    assert dataset.main is not None

# -----------------------------------------------------------------------------
# the offline corpus builder and its cleaners


def test_cleaners_strip_markup():
    rst = "Title\n=====\n\n.. index:: secret\n   hidden\n\nUse :func:`len` and ``x``, see `docs <http://x>`_.\n"
    assert clean_rst(rst).split() == "Title Use len and x, see docs.".split()
    html = ("<html><head><title>T</title><style>p{}</style></head><body><div class='navheader'>Prev Next</div>"
            "<h1>Head</h1><p>One &amp; <b>two</b>\n  three</p><pre>  x = 1\n  y</pre></body></html>")
    assert clean_html(html).strip() == "Head\n\n\n\nOne & two three\n\n\n\n  x = 1\n  y"
    pod = "=head1 NAME\n\nperlfoo - B<bold> C<< $a->b >> L<perlop|perlop/\"x\"> E<gt>\n\n=cut\n"
    assert clean_pod(pod).split() == "NAME perlfoo - bold $a->b perlop >".split()
    adoc = "git-x(1)\n========\n\nNAME\n----\nSee linkgit:git-log[1] and 'git x' {litdd}all.\n"
    assert clean_asciidoc(adoc).split() == "git-x(1) NAME See git-log(1) and git x --all.".split()


def test_split_documents_sizes():
    text = "\n\n".join(f"Paragraph {i} " + "lorem ipsum " * (20 + i % 50) for i in range(200))
    docs = split_documents(text)
    assert "\n\n".join(docs) == text  # nothing lost, order kept
    assert all(len(d) <= MAX_DOC + 200 for d in docs) and all(len(d) >= 1000 for d in docs[:-1])


@pytest.fixture
def corpus_dir(tmp_path):
    d = tmp_path / "texts"
    (d / "sub").mkdir(parents=True)
    para = lambda k, w: f"This is paragraph {k} about {w}, written in plain English for the tests. " * 6
    (d / "a.txt").write_text("\n\n".join(para(i, "apples") for i in range(40)))
    (d / "b.rst").write_text("Heading\n=======\n\n.. index:: zzzhidden\n\n" +
                             "\n\n".join(para(i, ":ref:`bananas`") for i in range(40)))
    (d / "sub" / "c.html").write_text("<html><head><script>var zzzscript=1;</script></head><body>" +
                                      "".join(f"<p>{para(i, '<i>cherries</i>')}</p>" for i in range(40)) + "</body></html>")
    (d / "sub" / "dup.txt").write_text((d / "a.txt").read_text())  # exact duplicate: its documents are dropped
    return d


def test_build_local_corpus_from_fixture_dir(corpus_dir, tmp_path):
    ddir = str(tmp_path / "data")
    build_local_corpus(ddir, from_dirs=[str(corpus_dir)], val_fraction=0.1, shard_chars=20_000, rows_per_group=4)
    m = json.load(open(os.path.join(ddir, "manifest.json")))
    train = list(iter_documents("train", ddir=ddir))
    val = list(iter_documents("val", ddir=ddir))
    everything = "\n".join(train + val)
    assert m["mode"] == "local" and m["val"]["file"] == "val_shard.parquet" and len(val) == m["val"]["docs"] >= 1
    assert len(train) + len(val) == m["docs"] and len(set(train + val)) == m["docs"]  # deduplicated
    assert not set(train) & set(val)
    for word in ("apples", "bananas", "cherries"):
        assert word in everything
    for junk in ("zzzhidden", "zzzscript", ":ref:", "<i>", "====="):
        assert junk not in everything
    assert len(m["train"]) >= 2 and all(os.path.exists(os.path.join(ddir, e["file"])) for e in m["train"])
    # deterministic: a rebuild gives byte-identical shards
    first = [e["sha256"] for e in m["train"]] + [m["val"]["sha256"]]
    build_local_corpus(ddir, from_dirs=[str(corpus_dir)], val_fraction=0.1, shard_chars=20_000, rows_per_group=4, force=True)
    m2 = json.load(open(os.path.join(ddir, "manifest.json")))
    assert [e["sha256"] for e in m2["train"]] + [m2["val"]["sha256"]] == first
    # a different seed shuffles differently
    build_local_corpus(ddir, from_dirs=[str(corpus_dir)], seed=1, val_fraction=0.1, shard_chars=20_000, rows_per_group=4, force=True)
    assert list(iter_documents("train", ddir=ddir)) != train


def test_local_build_refuses_to_overwrite_downloaded_shards(corpus_dir, tmp_path):
    ddir = str(tmp_path / "data")
    os.makedirs(ddir)
    json.dump({"mode": "online", "train": [], "val": None}, open(os.path.join(ddir, "manifest.json"), "w"))
    with pytest.raises(RuntimeError, match="--force"):
        build_local_corpus(ddir, from_dirs=[str(corpus_dir)])


def test_ensure_dataset_falls_back_to_the_offline_corpus_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
    monkeypatch.setenv("NANOCHAT_DATA_URL", "http://127.0.0.1:9")  # nothing listens there
    calls = []
    monkeypatch.setattr(dataset, "build_local_corpus", lambda ddir: calls.append(ddir) or ddir)
    monkeypatch.setattr(dataset, "download", lambda *a, **k: pytest.fail("must not download"))
    assert dataset.ensure_dataset(online=None) == str(tmp_path / "base_data") and len(calls) == 1
    with pytest.raises(DownloadError, match="--local"):
        monkeypatch.undo()
        monkeypatch.setenv("NANOCHAT_BASE_DIR", str(tmp_path))
        monkeypatch.setenv("NANOCHAT_DATA_URL", "http://127.0.0.1:9")
        dataset.ensure_dataset(online=True)
