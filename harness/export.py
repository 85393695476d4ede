"""Export: extract a model's activations on a dataset and write them as an activation set."""

from __future__ import annotations

from pathlib import Path

from harness import dataset as dataset_module
from harness import evidence
from harness.activations import ActivationSetError, StoredSet, read, write
from harness.config import DEFAULT_CACHE_DIR, ExtractionSettings, FitSettings, RunConfig
from harness.progress import ProgressFactory, tqdm_bar


def export(
    model: str,
    out: Path | str,
    dataset_path: Path | str | None = None,
    settings: ExtractionSettings | None = None,
    cache_dir: Path | str = DEFAULT_CACHE_DIR,
    sentences_per_pair: int | None = None,
    progress: ProgressFactory | None = None,
) -> StoredSet:
    """Extract ``model``'s activations on a dataset and write them as a set at ``out``.

    The GPU-machine half of a split run: no claims run. The extraction goes through the
    cache (an entry already there is reused, a new one is stored), then the set is written
    and read back, so what is exported has passed the reader's checks.
    """
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ActivationSetError(f"{out}: exists and is not an empty folder; choose a new --out")
    data = dataset_module.load(
        Path(dataset_path) if dataset_path is not None else None, sentences_per_pair
    )
    config = RunConfig(
        models=(model,),
        dataset=Path(dataset_path) if dataset_path is not None else None,
        extraction=settings if settings is not None else ExtractionSettings(),
        fit=FitSettings(families=("norm",)),  # unused: no claim runs
        report_dir=out,
        cache_dir=cache_dir,  # type: ignore[arg-type]  # a path or an fsspec URL
        baseline_dir=out,
        sentences_per_pair=sentences_per_pair,
    )
    built = evidence.build(model, data, config, progress or tqdm_bar)
    # The evidence's own table: for token selection "all", one row per sampled token.
    write(out, built.activations, built.dataset.frame)
    return read(out)
