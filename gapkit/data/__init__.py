"""gapkit data: GLUE, CoNLL-2003, any labeled CSV / TSV / JSON Lines / ``datasets`` data set, raw text for
distillation, the built-in synthetic task, model inputs and metrics. Every loader reads local files or the
Hugging Face Hub (docs/data.md)."""

from gapkit.data.conll import CONLL_LABELS, NerExample, load_conll, read_conll_file
from gapkit.data.custom import CustomData, CustomSpec, load_custom
from gapkit.data.features import (
    IGNORE_INDEX,
    align_predictions,
    check_max_len,
    encode_conll,
    encode_glue,
    pad_batch,
    tokenize_conll,
    tokenize_glue,
)
from gapkit.data.glue import GLUE_TASKS, Example, GlueTask, get_glue_task, load_glue
from gapkit.data.metrics import (
    classification_metrics,
    glue_metrics,
    glue_score,
    named_metrics,
    ner_metrics,
    primary_metric,
)
from gapkit.data.synthetic import SyntheticTask
from gapkit.data.text import (
    HUB_TEXT,
    TextCorpus,
    TokenSegments,
    cache_root,
    iter_text,
    pack_segment_pairs,
    split_sentences,
    text_segments,
)

__all__ = [
    "CONLL_LABELS", "GLUE_TASKS", "HUB_TEXT", "IGNORE_INDEX",
    "CustomData", "CustomSpec", "Example", "GlueTask", "NerExample", "SyntheticTask", "TextCorpus", "TokenSegments",
    "align_predictions", "cache_root", "check_max_len", "classification_metrics", "encode_conll", "encode_glue",
    "get_glue_task", "glue_metrics", "glue_score", "iter_text", "load_conll", "load_custom", "load_glue",
    "named_metrics", "ner_metrics", "pack_segment_pairs", "pad_batch", "primary_metric", "read_conll_file",
    "split_sentences", "text_segments", "tokenize_conll", "tokenize_glue",
]
