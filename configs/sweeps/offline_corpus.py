"""Write the offline corpus of the task-agnostic sweep (configs/sweeps/sst2_minilm_agnostic.yaml): the
training sentences of local GLUE (SST-2, MRPC, STS-B) and CoNLL-2003 copies, one sentence per line, a blank
line between documents, labels dropped. Dev and test sentences are left out, so no sentence a student is
scored on is distilled on. SST-2's training phrases are among them (the task's own sentences, unlabeled).

    python configs/sweeps/offline_corpus.py GLUE_DIR CONLL_DIR OUT.txt
"""

import itertools
import sys
from pathlib import Path

from gapkit.data.conll import load_conll
from gapkit.data.glue import load_glue

DOC = 8  # single sentences (SST-2 phrases, CoNLL sentences) per document


def documents(glue_dir: str, conll_dir: str):
    """The documents of the four sources, interleaved (one of each in turn while they last), so that the
    first N segments a run takes mix them all."""
    mrpc = [[e.text_a, e.text_b] for e in load_glue("mrpc", "train", glue_dir)]  # a pair: two sentences
    stsb = [[e.text_a, e.text_b] for e in load_glue("stsb", "train", glue_dir)]
    sst2 = [e.text_a for e in load_glue("sst2", "train", glue_dir)]
    conll = [" ".join(s.tokens) for s in load_conll("train", conll_dir)]
    sources = [mrpc, stsb, [sst2[i:i + DOC] for i in range(0, len(sst2), DOC)],
               [conll[i:i + DOC] for i in range(0, len(conll), DOC)]]
    for group in itertools.zip_longest(*sources):
        yield from (doc for doc in group if doc is not None)


def main(glue_dir: str, conll_dir: str, out: str) -> None:
    n_docs = n_sentences = 0
    with open(Path(out), "w", encoding="utf-8") as f:
        for doc in documents(glue_dir, conll_dir):
            f.write("\n".join(s.strip() for s in doc) + "\n\n")
            n_docs += 1
            n_sentences += len(doc)
    print(f"{out}: {n_sentences} sentences in {n_docs} documents")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
