"""Progress output: plain, occasional lines where stderr is not a terminal."""

import io

from harness import progress


def test_plain_lines_write_occasionally_and_once_at_the_end():
    stream = io.StringIO()
    with progress.plain_lines(1000, "fit m", "sample", stream=stream, every=3600) as bar:
        for _ in range(1000):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fit m: 1000/1000 samples (100%), ")


def test_plain_lines_write_every_interval():
    stream = io.StringIO()
    with progress.plain_lines(3, "x", "rep", stream=stream, every=0.0) as bar:
        for _ in range(3):
            bar.update(1)
    assert len(stream.getvalue().splitlines()) == 4  # one per update, one at the end


def test_tqdm_bar_is_plain_when_stderr_is_not_a_terminal(capsys):
    with progress.tqdm_bar(5, "stage", "layer") as bar:
        bar.update(5)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.strip().startswith("stage: 5/5 layers (100%)")
