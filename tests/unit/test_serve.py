"""`kpi serve`: starts without the pipeline's stack and says clearly what is wrong."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kpi.cli import main
from kpi.serve import ServeError, make_server


def test_serving_imports_no_pandas():
    code = "import sys, kpi.cli, kpi.serve; print(sorted({'pandas', 'altair'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ServeError, match="does not exist: run `kpi build-site`"):
        make_server(tmp_path / "nope", port=0)
    result = CliRunner().invoke(main, ["serve", "--dir", str(tmp_path / "nope"), "--port", "0"])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_a_busy_port_is_named(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} .* already in use"):
            make_server(tmp_path, port=port)
        result = CliRunner().invoke(main, ["serve", "--dir", str(tmp_path), "--port", str(port)])
        assert result.exit_code == 1 and "already in use" in result.output
