"""One look for every gapkit figure: fonts, sizes, seaborn's colorblind palette, and colours that stay
with a method or a teacher from one figure to the next.

Colours are assigned from names, never from the order of a plot's lines: a method keeps its colour in
every figure (:data:`METHOD_SLOTS` for the methods gapkit knows), and teachers (or student shapes) take
the palette in order of size, so the smallest teacher is always the first colour.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

__all__ = ["figure_style", "palette", "method_colours", "ordered_colours", "method_marker", "save_figure",
           "FORMATS"]

FORMATS = ("png", "pdf")
PALETTE_NAME = "colorblind"
# Fixed palette positions of gapkit's methods (seaborn colorblind: blue, orange, green, red, purple,
# brown, pink, grey, yellow, cyan); variants of a method (``minimoe[routing=random]``) take free ones.
METHOD_SLOTS = {"minilm": 0, "minilm_ta": 1, "minimoe": 2, "kd": 3, "finetune": 7}
METHOD_MARKERS = {"minilm": "o", "minilm_ta": "s", "minimoe": "D", "kd": "^", "finetune": "*"}
RC = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
    "lines.linewidth": 1.6, "lines.markersize": 5, "errorbar.capsize": 3, "figure.dpi": 100,
    "pdf.fonttype": 42,  # TrueType in PDFs: text stays text in papers and editors
}


@contextmanager
def figure_style():
    """Draw inside this context to get gapkit's look (seaborn ``whitegrid`` + :data:`RC`); the global
    matplotlib settings are restored on exit."""
    import matplotlib as mpl
    import seaborn as sns

    with mpl.rc_context(), sns.axes_style("whitegrid"):
        mpl.rcParams.update(RC)
        mpl.rcParams["axes.prop_cycle"] = mpl.cycler(color=palette())
        yield


def palette() -> list[tuple[float, float, float]]:
    """The 10 colours of seaborn's colorblind palette."""
    import seaborn as sns

    return list(sns.color_palette(PALETTE_NAME, 10))


def method_colours(methods) -> dict[str, tuple]:
    """A colour per method label: gapkit's methods at their fixed slot, any other label (variants, new
    methods) at the free slots in sorted order, so the same set of labels always gets the same colours."""
    colours = palette()
    out = {m: colours[METHOD_SLOTS[m]] for m in methods if m in METHOD_SLOTS}
    free = [i for i in range(len(colours)) if i not in METHOD_SLOTS.values()] + sorted(METHOD_SLOTS.values())
    for i, m in enumerate(sorted(set(methods) - set(out))):
        out[m] = colours[free[i % len(free)]]
    return out


def ordered_colours(names) -> dict[str, tuple]:
    """A colour per name in the order given (teachers or students sorted by size), cycling the palette."""
    colours = palette()
    return {name: colours[i % len(colours)] for i, name in enumerate(dict.fromkeys(names))}


def method_marker(method: str) -> str:
    """The marker of a method label (a variant takes its method's)."""
    return METHOD_MARKERS.get(method.split("[")[0], "o")


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write ``fig`` as ``stem.png`` (150 dpi) and ``stem.pdf``, each file whole or not at all; returns
    the paths written."""
    from ..io import atomic_write

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    return [atomic_write(stem.with_name(f"{stem.name}.{fmt}"),
                         lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"))
            for fmt in FORMATS]
