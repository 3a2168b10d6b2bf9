"""Atomic writes: the old file survives a failure, and a new file gets the user's umask (not mkstemp's 0600);
the one comparison of recorded settings."""

import os
import re
import stat

import pytest

from nni_bixnas.utils import atomic_torch_save, atomic_write, changed_settings


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_written_file_has_the_permissions_of_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "result.json") as handle:
            handle.write("{}")
        atomic_torch_save({"a": 1}, tmp_path / "state.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "state.pt").stat().st_mode) == mode


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_write(target) as handle:
            handle.write("new, half")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_changed_settings_names_each_differing_key(tmp_path):
    path = tmp_path / "run.json"
    fix = "{path} is not valid JSON ({err}); fix it"
    assert changed_settings(path, ("lr", "seed"), {"lr": 1}, fix) is None  # no earlier run
    path.write_text('{"lr": 0.001, "seed": 0, "other": 5}')
    assert changed_settings(path, ("lr", "seed"), {"lr": 0.001, "seed": 0, "other": 6}, fix) is None
    assert changed_settings(path, ("lr", "seed", "new"), {"lr": 0.01, "seed": 0, "new": 1}, fix) == \
        "lr: 0.001 -> 0.01, new: None -> 1"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not valid JSON \(.+\); fix it$"):
        changed_settings(path, ("lr",), {"lr": 1}, fix)
