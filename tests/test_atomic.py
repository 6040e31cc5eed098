import pytest

from pipeline import atomic


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
