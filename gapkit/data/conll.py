"""CoNLL-2003 English NER: local CoNLL files or the Hugging Face Hub, as lists of ``NerExample``.

Tags are IOB2 and are taken as written (no IOB1 conversion); entity-level scoring with seqeval's
default mode treats a stray ``I-X`` as the start of an entity either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gapkit.data.glue import subsample, utf8_error
from gapkit.errors import DataError

HUB_PATH = "eriktks/conll2003"
# The Hub dataset's ClassLabel order; label ids everywhere in gapkit use it.
CONLL_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
CONLL_SPLIT_FILES = {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}
_HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


@dataclass
class NerExample:
    """One sentence: its words and one IOB2 tag per word."""

    tokens: list[str]
    tags: list[str]


def load_conll(split: str, data_dir: str | Path | None = None, max_examples: int | None = None,
               seed: int = 0) -> list[NerExample]:
    """Load one split of CoNLL-2003 as sentences.

    Args:
        split: ``"train"``, ``"dev"`` (the file ``valid.txt``) or ``"test"``.
        data_dir: a folder holding ``train.txt``/``valid.txt``/``test.txt``, each either
            ``token<TAB>tag`` or the classic space-separated 4-column format (``EU NNP B-NP B-ORG``,
            tag last), blank line between sentences, ``-DOCSTART-`` lines skipped; None loads
            ``eriktks/conll2003`` from the Hugging Face Hub.
        max_examples: keep a seeded random subset of this many sentences (order preserved).
        seed: seed of that subset.

    Returns:
        The sentences, in file order.

    Raises:
        DataError: unknown split, missing file, a line with one field, or a tag outside CONLL_LABELS.
    """
    if split not in CONLL_SPLIT_FILES:
        raise DataError(f"Unknown CoNLL-2003 split {split!r}; use one of {', '.join(CONLL_SPLIT_FILES)}.")
    if data_dir is not None:
        examples = read_conll_file(Path(data_dir) / CONLL_SPLIT_FILES[split])
    else:
        examples = _load_hub(split)
    return subsample(examples, max_examples, seed)


def read_conll_file(path: str | Path, labels: tuple[str, ...] = CONLL_LABELS) -> list[NerExample]:
    """Read one CoNLL-format file (see ``load_conll``) into sentences, checking each tag is in ``labels``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CoNLL file {path} does not exist; data_dir must hold "
                        f"{', '.join(CONLL_SPLIT_FILES.values())}.")
    try:
        examples = _read_sentences(path, labels)
    except UnicodeDecodeError:
        raise utf8_error(path, "CoNLL file") from None
    if not examples:
        raise DataError(f"CoNLL file {path} holds no sentences (it is empty or has only -DOCSTART- lines); "
                        f"a split cannot be empty.")
    return examples


def _read_sentences(path: Path, labels: tuple[str, ...]) -> list[NerExample]:
    known = set(labels)
    examples, tokens, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("-DOCSTART-"):
                if tokens:  # sentence boundary
                    examples.append(NerExample(tokens, tags))
                    tokens, tags = [], []
                continue
            # Tab-separated when there is a tab (tokens may then contain spaces), else whitespace.
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                raise DataError(f"{path}, line {line_no}: expected 'token<TAB>tag' or 'token POS chunk tag', "
                                f"found one field {line!r}; fix or remove that line.")
            tag = fields[-1].strip()
            if tag not in known:
                raise DataError(f"{path}, line {line_no}: tag {tag!r} is not one of {', '.join(labels)}; "
                                f"fix the tag or pass the file's label set.")
            tokens.append(fields[0].strip())
            tags.append(tag)
    if tokens:  # last sentence without a trailing blank line
        examples.append(NerExample(tokens, tags))
    return examples


def _load_hub(split: str) -> list[NerExample]:
    import datasets  # deferred: importing datasets costs about a second

    try:
        ds = datasets.load_dataset(HUB_PATH, split=_HUB_SPLITS[split])
    except Exception as err:  # network, cache and Hub errors come in many types
        raise DataError(f"Could not load {HUB_PATH} split {_HUB_SPLITS[split]!r} from the Hugging Face Hub "
                        f"({type(err).__name__}: {err}); check the network or pass data_dir= a folder "
                        f"with train.txt/valid.txt/test.txt.") from err
    # Trust the dataset's own id -> name table when it has one, so a reordered release cannot
    # silently permute the tags.
    ner_feature = (getattr(ds, "features", None) or {}).get("ner_tags")
    names = getattr(getattr(ner_feature, "feature", None), "names", None) or CONLL_LABELS
    examples = []
    for i, row in enumerate(ds):
        bad = [t for t in row["ner_tags"] if not 0 <= t < len(names)]
        if bad:
            raise DataError(f"{HUB_PATH} split {_HUB_SPLITS[split]!r}, row {i}: tag id {bad[0]} is not one of the "
                            f"{len(names)} tags {', '.join(names)}.")
        examples.append(NerExample(list(row["tokens"]), [names[t] for t in row["ner_tags"]]))
    if not examples:
        raise DataError(f"{HUB_PATH} split {_HUB_SPLITS[split]!r} has no sentences.")
    return examples
