"""gapkit data: GLUE, CoNLL-2003, any labeled CSV / TSV / JSON Lines / ``datasets`` data set, raw text for
distillation, the built-in synthetic task, model inputs and metrics. Every loader reads local files or the
Hugging Face Hub (docs/data.md). Names are imported on first use (:mod:`gapkit.lazy`)."""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".conll": ("CONLL_LABELS", "NerExample", "load_conll", "read_conll_file"),
    ".custom": ("CustomData", "CustomSpec", "load_custom"),
    ".features": ("IGNORE_INDEX", "align_predictions", "check_max_len", "encode_conll", "encode_glue", "pad_batch",
                  "tokenize_conll", "tokenize_glue"),
    ".glue": ("GLUE_TASKS", "Example", "GlueTask", "get_glue_task", "load_glue"),
    ".metrics": ("classification_metrics", "glue_metrics", "glue_score", "named_metrics", "ner_metrics",
                 "primary_metric"),
    ".synthetic": ("SyntheticTask",),
    ".text": ("HUB_TEXT", "TextCorpus", "TokenSegments", "cache_root", "iter_text", "pack_segment_pairs",
              "split_sentences", "text_segments"),
})
