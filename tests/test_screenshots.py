"""``moe-studio screenshots``: one PNG per view of the real main window at 1280 x 800,
small enough to commit; bad options are one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from moe_studio.cli import main as cli_main  # noqa: E402


def test_one_small_png_per_view(qapp, tmp_path, capsys):
    from PySide6.QtGui import QImage

    from moe_studio.gui.main_window import DASHBOARDS
    from moe_studio.gui.commands.screenshots import SHOTS
    assert [v for v, _ in SHOTS] == [t for t, _ in DASHBOARDS]    # every view, in order
    out = tmp_path / "shots"
    assert cli_main(["screenshots", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    files = sorted(out.glob("*.png"))
    assert [f.stem for f in files] == sorted(t.lower() for t, _ in DASHBOARDS)
    for f in files:
        assert f"wrote {f}" in printed
        assert f.stat().st_size < 300 * 1024, f
        img = QImage(str(f)).convertToFormat(QImage.Format.Format_RGB32)
        assert (img.width(), img.height()) == (1280, 800), f
        px = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes()).reshape(800, -1, 4)
        assert px[..., :3].std() > 20, f                    # a window, not a blank
    # each view differs from the others (each shows its own tab)
    digests = {Path(f).read_bytes() for f in files}
    assert len(digests) == len(files)


@pytest.mark.parametrize("size", ["1280", "100x100", "axb"])
def test_bad_size_is_one_line(tmp_path, capsys, size):
    assert cli_main(["screenshots", "--out", str(tmp_path), "--size", size]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moe-studio screenshots: --size") and "\n" not in err
    assert not list(tmp_path.glob("*.png"))

