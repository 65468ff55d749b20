"""Output files are complete or absent: a failed write leaves no 0-byte, truncated or temporary file."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap

import pytest

from medgen.files import OutputError, atomic_write, check_writable_dir


def test_a_write_that_fills_the_disk_leaves_nothing_and_names_the_file(tmp_path):
    target = tmp_path / "report.json"
    with pytest.raises(OutputError) as raised:
        with atomic_write(target, "w") as file:
            file.write('{"half": ')
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(raised.value) == f"cannot write {target}: No space left on device"
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_a_finished_write_replaces_and_a_no_overwrite_write_refuses(tmp_path):
    target = tmp_path / "params.json"
    with atomic_write(target, "w") as file:
        file.write("first")
    with atomic_write(target, "w") as file:
        file.write("second")
    assert target.read_text() == "second"
    with pytest.raises(OutputError, match="File exists"):
        with atomic_write(target, "wb", overwrite=False) as file:
            file.write(b"third")
    assert target.read_text() == "second" and [path.name for path in tmp_path.iterdir()] == ["params.json"]


def test_a_folder_under_a_regular_file_is_refused_naming_it(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    for create in (False, True):
        with pytest.raises(OutputError, match="not-a-folder"):
            check_writable_dir(blocker / "out", create=create)
    with pytest.raises(OutputError, match="not a folder"):
        check_writable_dir(blocker)
    assert check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checking alone creates nothing
    assert sorted(path.name for path in tmp_path.iterdir()) == ["not-a-folder"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE write failures are Linux behaviour")
def test_evaluation_report_is_complete_or_absent_when_the_kernel_refuses_the_write(tmp_path):
    """A real failing write(2): the file size limit makes the kernel refuse bytes past 4 KiB (EFBIG)."""
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from pathlib import Path
        from medgen.evaluation.report import write_html, write_json

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        out = Path(sys.argv[1])
        write_json({"fid": 1.5}, out / "report.json")
        try:
            write_html({"notes": ["x" * 100] * 100}, out / "report.html", {})
        except OSError as error:
            print(error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cannot write {tmp_path / 'report.html'}: File too large"
    assert json.loads((tmp_path / "report.json").read_text()) == {"fid": 1.5}
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]  # no truncated report.html
