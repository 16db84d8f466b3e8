"""`atomic_dir`: a folder is replaced whole or not at all."""

import pytest

from dore.data.model import atomic_dir


def test_a_finished_block_replaces_the_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp != target and not any(tmp.iterdir())
        (tmp / "new.bin").write_text("new")
        assert (target / "old.bin").exists()  # readers still see the old folder meanwhile
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert not tmp.exists()


def test_a_failed_block_keeps_the_old_folder_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["old.bin"] and not tmp.exists()
