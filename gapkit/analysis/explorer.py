"""The views of ``notebooks/03_expert_load_balance.ipynb``: how a MiniMoE student's experts share the
tokens, interactively (ipywidgets) or as static figures.

    explorer = ExpertExplorer("runs/synthetic/minimoe_task")   # a run, a saved student or a released checkpoint
    explorer.show("5 9 12 7", layer=1, block="ffn")            # controls when ipywidgets is there, else figures

Views, each a plain function of gapkit that returns a figure or a table:

* token share per expert (layer x expert heatmap, :func:`~gapkit.analysis.plot_expert_share`) at a chosen
  step of the run's ``routing.parquet``; for a student without a training record (a released
  checkpoint) over the tokens of the sentences typed (:func:`~gapkit.analysis.inspection.sentence_routing`);
* load balance and gate entropy over training steps (:func:`~gapkit.analysis.plot_routing_training`),
  for runs only;
* the tokens each expert of a chosen layer and block receives most (:func:`~gapkit.analysis.plot_top_tokens`);
* each token of the sentences with its expert and gate probability per layer and block
  (:func:`~gapkit.analysis.inspect_tokens`, :func:`~gapkit.analysis.token_expert_table`).
"""

from __future__ import annotations

import os
from typing import Sequence

from ..errors import ConfigError, GapkitError
from .inspection import MODE_NOTES, inspect_tokens, load_for_inspection, sentence_routing, token_expert_table
from .plots import _pick_split, _pick_step, plot_expert_share, plot_routing_training, plot_top_tokens, read_routing

__all__ = ["ExpertExplorer"]

BLOCK_NAMES = {"attn": "attention", "ffn": "FFN"}


class ExpertExplorer:
    """One student's routing views (see the module docstring).

    Args:
        student: a run folder, a saved student folder or a released MiniMoE checkpoint (as
            :func:`~gapkit.analysis.load_for_inspection` takes it).
        tokenizer: None (the student's own), a tokenizer folder or Hub name, ``"ids"``, or a tokenizer.
    Raises:
        ModelError / DataError: as :func:`~gapkit.analysis.load_for_inspection`.
    """

    def __init__(self, student: str | os.PathLike, tokenizer=None):
        self.inspection = load_for_inspection(student, tokenizer)
        self.run_dir = self.inspection.run_dir if self.inspection.routing_file is not None else None
        self.routing = read_routing(self.run_dir) if self.run_dir is not None else None

    # -- the choices -------------------------------------------------------------------------------
    @property
    def student(self):
        return self.inspection.student

    @property
    def tokenizer(self):
        return self.inspection.tokenizer

    @property
    def layers(self) -> list[int]:
        return list(range(self.student.spec.layers))

    @property
    def blocks(self) -> list[str]:
        """The blocks with experts: ``attn`` and/or ``ffn``."""
        spec = self.student.spec
        return [b for b, n in (("attn", spec.attn_experts), ("ffn", spec.ffn_experts)) if n > 1]

    @property
    def splits(self) -> list[str]:
        """Splits of the run's routing record (``train``, ``dev``); empty without one."""
        return sorted(set(self.routing.split)) if self.routing is not None else []

    def default_split(self) -> str | None:
        return _pick_split(self.routing, None) if self.routing is not None else None

    def steps(self, split: str | None = None) -> list[int]:
        """The recorded steps of ``split`` (default: dev, else train); empty without a routing record."""
        if self.routing is None:
            return []
        split = _pick_split(self.routing, split)
        return sorted(int(s) for s in set(self.routing[self.routing.split == split].step))

    def describe(self) -> str:
        """The student, its weights, routing mode and tokenizer, and what the training record holds."""
        lines = [self.inspection.describe()]
        if self.routing is None:
            lines.append("training record: none (not a run folder with routing.parquet); the token-share and "
                         "top-token views are computed over the sentences typed")
        else:
            parts = [f"{split}: {len(self.steps(split))} steps ({self.steps(split)[0]} to {self.steps(split)[-1]})"
                     for split in self.splits]
            lines.append(f"training record: {self.inspection.routing_file} ({'; '.join(parts)})")
        return "\n".join(lines)

    # -- the views ---------------------------------------------------------------------------------
    def _sentence_record(self, sentences):
        return sentence_routing(self.student, self.tokenizer, sentences)

    def share_figure(self, step: int | None = None, split: str | None = None,
                     sentences: str | Sequence[str] | None = None):
        """Layer x expert token shares: the run's at ``step`` on ``split`` (default: the last step on dev,
        else train), or, without a training record, over the tokens of ``sentences``."""
        if self.routing is not None:
            return plot_expert_share(self.run_dir, step=step, split=split)
        if sentences is None:
            raise ConfigError("This student has no training record: give sentences to compute the token shares over.")
        fig = plot_expert_share(self._sentence_record(sentences))
        fig.suptitle(f"Token share per expert: {self.inspection.source}, over the sentences typed", fontsize=9)
        return fig

    def balance_figure(self, split: str = "train"):
        """Load balance and gate entropy over training steps; None without a training record."""
        return plot_routing_training(self.run_dir, split=split) if self.routing is not None else None

    def top_tokens_figure(self, layer: int | None = None, block: str | None = None, step: int | None = None,
                          split: str | None = None, sentences: str | Sequence[str] | None = None, k: int = 10):
        """The tokens each expert of one block receives most: from the run's record, or over ``sentences``."""
        if self.routing is not None:
            return plot_top_tokens(self.run_dir, step=step, split=split, layer=layer, block=block, k=k,
                                   tokenizer=self.tokenizer)
        if sentences is None:
            raise ConfigError("This student has no training record: give sentences to count the tokens of.")
        return plot_top_tokens(self._sentence_record(sentences), layer=layer, block=block, k=k,
                               tokenizer=self.tokenizer)

    def token_table(self, sentences: str | Sequence[str]):
        """Each token's expert and gate probability per layer and block (:func:`token_expert_table`)."""
        return token_expert_table(inspect_tokens(self.student, self.tokenizer, sentences))

    # -- showing them ------------------------------------------------------------------------------
    def _choices(self, layer, block, step, split) -> tuple[int, str, int | None, str | None]:
        layer = self.layers[-1] if layer is None else layer
        if layer not in self.layers:
            raise ConfigError(f"The student has layers 0 to {self.layers[-1]}, not {layer}.")
        block = block or self.blocks[-1]
        if block not in self.blocks:
            raise ConfigError(f"The student has experts in the {' and '.join(self.blocks)} block(s), not {block!r}.")
        if self.routing is not None:
            split = _pick_split(self.routing, split)
            step = _pick_step(self.routing, split, step)
        return layer, block, step, split

    def show(self, sentence: str | Sequence[str], layer: int | None = None, block: str | None = None,
             step: int | None = None, split: str | None = None, interactive: bool = True) -> None:
        """Display the views in a notebook: with controls (layer, block, step, sentence) when
        ``interactive`` and ipywidgets is importable, else every view once, as static output.

        Args:
            sentence: the text (one sentence or several) whose tokens are shown.
            layer, block, step, split: the first choices (default: last layer, FFN block, last step on
                dev, else train).
        """
        from IPython.display import display

        choices = self._choices(layer, block, step, split)
        if interactive:
            try:
                import ipywidgets  # noqa: F401
            except ImportError:
                print("ipywidgets is not installed: showing the views statically (pip install ipywidgets for the "
                      "controls).")
            else:
                display(self.widget(sentence, *choices))
                return
        self.show_static(sentence, *choices)

    def show_static(self, sentence, layer: int, block: str, step: int | None, split: str | None) -> None:
        """Every view once, for fixed choices (what a notebook run without widgets shows)."""
        from IPython.display import display

        for title, draw in self._views(sentence, layer, block, step, split):
            print(title)
            _display_figure(draw(), display)
        print(f"Each token's expert and gate probability (e2 0.91: expert 2, probability 0.91); "
              f"{MODE_NOTES[self.student.spec.routing]}:")
        display(self.token_table(sentence))

    def _views(self, sentence, layer, block, step, split):
        """(title, draw) of each figure for these choices."""
        where = f"step {step} on {split}" if self.routing is not None else "over the sentences typed"
        views = [(f"Token share per expert, {where}:", lambda: self.share_figure(step, split, sentence))]
        if self.routing is not None:
            views.append(("Load balance and gate entropy over training:", lambda: self.balance_figure()))
        views.append((f"Tokens each expert of layer {layer} ({BLOCK_NAMES[block]} block) receives most, {where}:",
                      lambda: self.top_tokens_figure(layer, block, step, split, sentence)))
        return views

    def widget(self, sentence, layer: int, block: str, step: int | None, split: str | None):
        """The controls and the views that follow them (an ipywidgets ``VBox``)."""
        import ipywidgets as w
        from IPython.display import display

        controls = dict(
            layer=w.Dropdown(options=[(f"layer {i}", i) for i in self.layers], value=layer, description="layer"),
            block=w.ToggleButtons(options=[(BLOCK_NAMES[b], b) for b in self.blocks], value=block, description="block"),
            sentence=w.Text(value=sentence if isinstance(sentence, str) else " ||| ".join(sentence),
                            description="sentence", continuous_update=False, layout=w.Layout(width="90%")),
        )
        if self.routing is not None:
            controls["split"] = w.ToggleButtons(options=self.splits, value=split, description="split")
            controls["step"] = w.SelectionSlider(options=self.steps(split), value=step, description="step",
                                                 continuous_update=False)

            def follow_split(change):  # each split has its own steps
                steps = self.steps(change["new"])
                controls["step"].options = steps
                controls["step"].value = steps[-1]

            controls["split"].observe(follow_split, names="value")
        outputs = dict(share=w.Output(), balance=w.Output(), tokens=w.Output(), table=w.Output())

        def texts():
            value = controls["sentence"].value
            return [s for s in value.split("|||")] if "|||" in value else value

        def render(*names):
            c = {k: v.value for k, v in controls.items()}
            step_, split_ = c.get("step"), c.get("split")
            jobs = dict(share=lambda: self.share_figure(step_, split_, texts()),
                        balance=lambda: self.balance_figure(),
                        tokens=lambda: self.top_tokens_figure(c["layer"], c["block"], step_, split_, texts()),
                        table=lambda: self.token_table(texts()))
            for name in names:
                out = outputs[name]
                out.clear_output(wait=True)
                with out:
                    try:
                        result = jobs[name]()
                    except GapkitError as err:  # a bad sentence, a step without rows: say it, keep the panel
                        print(" ".join(str(err).split()))
                        continue
                    if name == "table":
                        display(result)
                    elif result is not None:
                        _display_figure(result, display)

        trained = self.routing is not None
        for name, widget in controls.items():
            follows = {"layer": ["tokens"], "block": ["tokens"], "step": ["share", "tokens"],
                       "split": [], "sentence": ["table"] + ([] if trained else ["share", "tokens"])}[name]
            if follows:
                widget.observe(lambda _change, f=follows: render(*f), names="value")
        render("share", "balance", "tokens", "table")
        order = ["sentence", "layer", "block"] + (["split", "step"] if trained else [])
        note = w.HTML("<small>Several sentences: separate them with |||. Cells read <code>e2 0.91</code>: expert 2, "
                      "gate probability 0.91.</small>")
        return w.VBox([*(controls[k] for k in order), note, outputs["share"],
                       *([outputs["balance"]] if trained else []), outputs["tokens"], outputs["table"]])


def _display_figure(fig, display) -> None:
    """Show a matplotlib figure once and free it (the inline backend would show it again at the cell's end)."""
    import matplotlib.pyplot as plt

    display(fig)
    plt.close(fig)
