"""Every benchmark's result comes in one envelope and lands in a folder git ignores.

The stories: a result names its bench, the machine, when it started and
finished and the command that ran it; it is printed as one JSON line and
saved as ``<bench>-<timestamp>.json``; by default under var/bench-results/,
which git ignores, so a benchmark run never leaves a file to commit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import pytest

from simulators.bench_harness import (
    DEFAULT_RESULTS_DIR,
    add_output_options,
    bench_result,
    bench_work_dir,
    command_line,
    publish,
)

REPO = Path(__file__).resolve().parents[2]


def test_a_result_carries_the_machine_its_times_and_its_figures() -> None:
    started = time.time() - 5
    result = bench_result("ingest", {"ratio": 0.7, "lost": 0}, started_at=started)
    assert result["bench"] == "ingest"
    assert (result["ratio"], result["lost"]) == (0.7, 0)
    assert {"cpus", "platform", "python"} <= set(result["machine"])
    assert result["started_at"] < result["finished_at"]
    assert result["started_at"].endswith("Z")


def test_published_results_are_one_json_line_and_one_file_with_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    add_output_options(parser)
    args = parser.parse_args(["--json", "--results-dir", str(tmp_path)])
    path = publish(bench_result("panic", {"lost": 0}, started_at=time.time()), args)
    out, err = capsys.readouterr()
    line = json.loads(out)
    assert line == json.loads(path.read_text())
    assert line["command"].startswith("nigehbaan")
    assert path.parent == tmp_path
    assert path.name.startswith("panic-")
    assert err == ""  # --json: only the line


def test_the_command_is_quoted_as_a_shell_would_need_it() -> None:
    assert command_line(["bench", "ingest", "--db", "sqlite:///a b.db"]) == (
        "nigehbaan bench ingest --db 'sqlite:///a b.db'"
    )


def test_results_go_by_default_to_a_folder_git_ignores() -> None:
    parser = argparse.ArgumentParser()
    add_output_options(parser)
    assert parser.parse_args([]).results_dir == DEFAULT_RESULTS_DIR
    assert DEFAULT_RESULTS_DIR.parts[0] == "var"
    probe = DEFAULT_RESULTS_DIR / "panic-20261130T120000Z.json"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(probe)], cwd=REPO, check=False, timeout=30
    )
    assert ignored.returncode == 0, f"{probe} is not ignored by git"


def test_a_work_dir_given_is_kept_and_a_temporary_one_removed(tmp_path: Path) -> None:
    kept = tmp_path / "work"
    with bench_work_dir(kept) as work:
        assert work == kept
        assert work.is_dir()
    assert kept.is_dir()
    with bench_work_dir(None) as work:
        temporary = work
        assert temporary.is_dir()
    assert not temporary.exists()
