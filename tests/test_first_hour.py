"""What a newcomer meets in the first hour: a closed port, a folder of junk, the numbers."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from emailwb import cli


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def test_run_against_a_closed_port_fails_before_ingesting_in_one_line(tmp_path: Path,
                                                                       capsys: Any) -> None:
    db = tmp_path / "w.sqlite"
    sample = Path(__file__).resolve().parents[1] / "data" / "enron-sample"
    rc = cli.main(["run", str(sample), "--db", str(db), "--backend", "ollama", "--url",
                   f"http://127.0.0.1:{closed_port()}", "--model", "llama3.2:3b", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert not db.exists() and "ingested" not in out  # nothing was ingested
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert "cannot reach the server" in line and "nothing was ingested or queued" in line
    assert "ClientConnectorError" not in line and "ConnectionKey" not in line  # no repr
    assert "`ollama serve`" in line and "retries on its own" not in line
