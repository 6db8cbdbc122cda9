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


@pytest.fixture
def served(tmp_path):
    """(base URL, folder) of `make_server` serving an empty folder, in a thread."""
    import threading

    server = make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()
    server.server_close()


def test_an_empty_site_folder_says_it_waits_for_the_first_run(served):
    import httpx

    base, folder = served
    (folder / "stray").mkdir()  # a folder without a page is never listed either
    answer = httpx.get(f"{base}/")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    assert answer.headers["content-type"].startswith("text/html")
    assert "waiting for the first run" in answer.text
    assert "Directory listing" not in answer.text and "stray" not in answer.text
    assert '<meta http-equiv="refresh" content="30">' in answer.text  # shows the site once built
    listing = httpx.get(f"{base}/stray/")
    assert listing.status_code == 404 and "Directory listing" not in listing.text
    (folder / "index.html").write_text("<h1>Overview</h1>", encoding="utf-8")
    assert httpx.get(f"{base}/").text == "<h1>Overview</h1>"  # published: the site itself


def test_build_site_refuses_a_reversed_range_as_a_usage_error():
    result = CliRunner().invoke(main, ["build-site", "--start", "2026-11-26",
                                       "--end", "2026-11-20"])
    assert result.exit_code == 2 and "--end is before --start" in result.output
