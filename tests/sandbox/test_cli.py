"""`dsv4 sandbox run`: exit status, output, and the timeout report."""

import pytest

from dsv4.cli import main
from dsv4.sandbox import BackendUnavailable, Sandbox


@pytest.fixture(autouse=True)
def process_backend_runs():
    try:
        Sandbox.create("process").close()
    except BackendUnavailable as e:
        pytest.skip(f"backend 'process' unavailable: {e}")


def test_run_prints_output_and_returns_the_exit_code(capsys):
    assert main(["sandbox", "run", "echo out; echo err >&2; exit 3"]) == 3
    out, err = capsys.readouterr()
    assert (out, err) == ("out\n", "err\n")


def test_run_reports_a_timeout(capsys):
    assert main(["sandbox", "run", "sleep 10", "--timeout", "0.5"]) == 137
    assert "timed_out=True" in capsys.readouterr().err
