"""Report figures (matplotlib, Agg): one function per kind, each table -> one small PNG."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd


def _plt() -> Any:
    """matplotlib.pyplot, imported late so the Agg backend is chosen first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def lines(frame: pd.DataFrame, title: str, path: Path) -> bool:
    """Numeric columns against ``layer``; ``X_ci_low``/``X_ci_high`` become a band around X."""
    if "layer" not in frame or len(frame) < 2:
        return False
    # Iterating a frame walks its column names: str in every report table.
    columns = cast("Iterable[str]", frame)
    bands = {c[: -len("_ci_low")] for c in columns if c.endswith("_ci_low")}
    numeric = [
        c
        for c in frame.columns
        if c != "layer"
        and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
        and not c.endswith(("_ci_low", "_ci_high"))
    ]
    if not numeric:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for column in numeric:
        (line,) = ax.plot(frame["layer"], frame[column], marker="o", markersize=3, label=column)
        if column in bands:
            ax.fill_between(
                frame["layer"],
                frame[f"{column}_ci_low"],
                frame[f"{column}_ci_high"],
                color=line.get_color(),
                alpha=0.2,
            )
    ax.set_xlabel("layer")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def heatmap_grid(frame: pd.DataFrame, title: str, path: Path) -> bool:
    """Small multiples of a (row x column) matrix per layer, one shared diverging scale.

    Expects columns layer, row, column, value; at most 12 evenly spaced layers are shown.
    """
    needed = {"layer", "row", "column", "value"}
    if not needed <= set(frame.columns) or frame.empty:
        return False
    layers = sorted(frame["layer"].unique())
    shown = [layers[i] for i in np.unique(np.linspace(0, len(layers) - 1, 12).round().astype(int))]
    rows = list(dict.fromkeys(frame["row"]))
    cols = list(dict.fromkeys(frame["column"]))
    limit = float(np.nanmax(np.abs(frame["value"]))) or 1.0
    plt = _plt()
    ncols = min(4, len(shown))
    nrows = int(np.ceil(len(shown) / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.3 * ncols + 1.6, 2.1 * nrows + 0.9), dpi=90, squeeze=False
    )
    image = None
    for ax, layer in zip(axes.flat, shown, strict=False):
        grid = (
            frame[frame["layer"] == layer]
            .pivot(index="row", columns="column", values="value")
            .reindex(index=rows, columns=cols)
        )
        image = ax.imshow(grid.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_title(f"layer {layer}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    left = axes[-1][0]
    left.set_xticks(
        range(len(cols)), [c.removeprefix("in ") for c in cols], rotation=90, fontsize=6
    )
    left.set_yticks(range(len(rows)), rows, fontsize=6)
    fig.suptitle(title, fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="D (+ subject attracts)")
    return _save(fig, path, tight=False)


def density(frame: pd.DataFrame, title: str, path: Path) -> bool:
    """KDE curves with their detected modes marked.

    Expects columns curve, x, density and a boolean mode (True at a detected mode)."""
    if not {"curve", "x", "density", "mode"} <= set(frame.columns) or frame.empty:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for name, curve in frame.groupby("curve", sort=False):
        (line,) = ax.plot(curve["x"], curve["density"], linewidth=1.2, label=str(name))
        peaks = curve[curve["mode"].astype(bool)]
        ax.plot(peaks["x"], peaks["density"], "o", color=line.get_color(), markersize=4)
    # Secondary modes sit down to 1e-4 of the peak: only a log scale shows them.
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 2.0)
    ax.set_xlabel("value (robust sd from the median)")
    ax.set_ylabel("density / max (log)")
    ax.set_title(title + " (dots: detected modes)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: Path, tight: bool = True) -> bool:
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    _plt().close(fig)
    return True


KINDS: dict[str, Callable[[pd.DataFrame, str, Path], bool]] = {
    "lines": lines,
    "heatmap": heatmap_grid,
    "density": density,
}
