"""contract.atomic_write under races, kills, full disks and umasks (issue 19 items 9, 10, 11, 16)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pgn_deploy.contract import ArtifactExistsError, PGNError, atomic_write, atomic_write_text


def test_two_writers_without_force_one_wins_the_other_is_refused(tmp_path):
    """Item 16: both writers pass the early exists() check; the final step must not overwrite."""
    target = tmp_path / "out.txt"
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def writer(text: str) -> None:
        def write(tmp: Path) -> None:
            tmp.write_text(text)
            barrier.wait(10)  # both are past check_output_path before either finishes
        try:
            atomic_write(target, write)
            outcomes[text] = "written"
        except ArtifactExistsError as exc:
            outcomes[text] = exc

    threads = [threading.Thread(target=writer, args=(t,)) for t in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    winners = [text for text, outcome in outcomes.items() if outcome == "written"]
    assert len(winners) == 1 and len(outcomes) == 2
    assert target.read_text() == winners[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_without_force_an_existing_file_is_kept_and_with_force_replaced(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(ArtifactExistsError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    atomic_write_text(target, "new", force=True)
    assert target.read_text() == "new"


def test_written_files_get_the_umask_mode(tmp_path):
    """Item 9: 0644 under umask 022 and 0640 under umask 027, never mkstemp's 0600."""
    code = ("import os, sys; from pgn_deploy.contract import atomic_write_text; os.umask(int(sys.argv[2], 8)); "
            "atomic_write_text(sys.argv[1], 'x')")
    for umask, mode in (("022", 0o644), ("027", 0o640)):
        target = tmp_path / f"file{umask}"
        subprocess.run([sys.executable, "-c", code, str(target), umask], check=True, env=os.environ | {
            "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert target.stat().st_mode & 0o777 == mode


def test_a_killed_writer_leaves_a_temp_file_the_next_write_removes(tmp_path):
    """Item 10: kill -9 mid-write leaves ``.<name>.pgn<pid>-*.tmp``; the next write of that name removes it."""
    target = tmp_path / "model.onnx"
    code = ("import os, sys; from pgn_deploy.contract import atomic_write\n"
            "def write(tmp):\n    tmp.write_bytes(b'x' * 4096); print('writing', flush=True); os.kill(os.getpid(), 9)\n"
            "atomic_write(sys.argv[1], write)")
    process = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                             env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert process.returncode == -9 and "writing" in process.stdout
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and not target.exists()
    running = tmp_path / f".model.onnx.pgn{os.getppid()}-abcd.tmp"  # a live process's file: kept
    running.write_text("in progress")
    foreign = tmp_path / ".model.onnx.mine.tmp"  # not named as ours: kept
    foreign.write_text("someone else's")
    atomic_write_text(target, "done")
    assert target.read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.onnx", running.name, foreign.name])


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   OSError("131072 requested and 108512 written")])
def test_a_full_disk_names_the_file_and_says_so(tmp_path, error):
    """Item 11: numpy's short write and ENOSPC both read 'the disk is full', naming the file."""
    target = tmp_path / "big.onnx"

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise error

    with pytest.raises(PGNError, match=r"big\.onnx: the disk is full") as info:
        atomic_write(target, write)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_triton_model_folder_is_readable_by_others(tmp_path):
    """Item 9: pgn-triton's folder was 0700 (mkdtemp); Triton may run as another user."""
    from pgn_deploy.engines.triton import write_triton_repository
    from tests.support.engine_models import grafted

    previous = os.umask(0o022)
    try:
        report = write_triton_repository(grafted("tiny"), tmp_path, name="m")
    finally:
        os.umask(previous)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755
    assert report.model_file.stat().st_mode & 0o777 == 0o644
