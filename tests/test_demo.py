"""`make demo` end to end: the demo script runs the relay against the Quivo stand-in and exits 0."""

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "What Quivo received" in result.stdout
    assert "[bringg:1:3452]" in result.stdout
    assert "What Quivo received on tenant globex's account" in result.stdout
    assert "[bringg:2:5001]" in result.stdout
