import pytest

from plumbing import atomic


def test_atomic_output(tmp_path):
    target = tmp_path / "out.txt"
    atomic.write_text(target, "one")
    assert target.read_text() == "one" and oct(target.stat().st_mode & 0o777) != oct(0o600)
    try:
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    except RuntimeError:
        pass
    assert target.read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(atomic.OutputExistsError, match="already exists"):
        atomic.write_text(target, "two", overwrite=False)


def test_a_failed_write_removes_the_folders_it_made(tmp_path):
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "a" / "b" / "out.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    atomic.write_text(tmp_path / "a" / "b" / "out.txt", "whole")  # a success keeps them
    assert (tmp_path / "a" / "b" / "out.txt").read_text() == "whole"


def test_outputs_are_checked_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(atomic.OutputError, match="is a folder: the output is a file"):
        atomic.check_output(tmp_path)
    with pytest.raises(atomic.OutputError, match="lies under .*afile, which is a file"):
        atomic.check_output(tmp_path / "afile" / "deeper" / "out.jsonl")
    with pytest.raises(atomic.OutputError, match="afile is a file: the output is a folder"):
        atomic.check_output(tmp_path / "afile", folder=True)
    with pytest.raises(atomic.OutputExistsError, match="already exists: pass --force to replace it"):
        atomic.check_output(tmp_path / "afile", force=False)
    assert atomic.check_output(tmp_path / "new" / "out.jsonl", force=False) == tmp_path / "new" / "out.jsonl"
    assert not (tmp_path / "new").exists()
