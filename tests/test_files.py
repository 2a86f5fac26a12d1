import os
import stat

import pytest

from ssad.files import atomic_dir, atomic_path, atomic_write_text


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_outputs_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_path(tmp_path / "m.keras") as tmp:
            tmp.write_bytes(b"x")
        with atomic_dir(tmp_path / "export") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o644
    assert _mode(tmp_path / "m.keras") == 0o644
    assert _mode(tmp_path / "export") == 0o755
    assert (tmp_path / "export" / "f").read_text() == "y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "export", "m.keras"]


def test_failure_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "scores.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "scores.json"):
            pass
