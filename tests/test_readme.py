"""The README's tutorial runs as written (one epoch instead of forty) on the real data."""
import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tutorial_and_linear_model_run():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    tutorial = blocks[0].replace("epochs=40", "epochs=1").replace("plt.show()", "plt.close('all')")
    assert "epochs=1" in tutorial
    scope = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(tutorial, "README tutorial", "exec"), scope)
    assert set(scope["history"].history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert scope["accuracy"] > 0.6
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(blocks[1], "README linear model", "exec"), scope)
    assert abs(scope["w"][0, 0] - 3) < 0.3 and abs(scope["b"][0] - 2) < 0.3
