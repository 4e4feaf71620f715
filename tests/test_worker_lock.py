"""On SQLite one worker per database: a second refuses to start with one line; a killed one leaves no lock."""

import signal
from functools import partial
from pathlib import Path

from tests.processes import relay_process, run_relay, wait_for
from tests.test_startup import relay_env, started_or_exited


def test_a_second_worker_on_one_sqlite_file_refuses_to_start_until_the_first_is_gone(tmp_path: Path):
    env = relay_env(tmp_path)
    first_log = tmp_path / "first.log"
    with relay_process("worker", env=env, cwd=tmp_path, log_path=first_log) as first:
        wait_for(partial(started_or_exited, first, first_log), "first worker started")
        assert first.poll() is None, first_log.read_text()

        for command in (("worker",), ("serve",)):
            refused = run_relay(*command, env=relay_env(tmp_path), cwd=tmp_path)
            assert refused.returncode == 2, (command, refused.stderr)
            assert refused.stderr.count("\n") == 1, refused.stderr
            assert f"another relay worker (pid {first.pid})" in refused.stderr
            assert "Traceback" not in refused.stdout + refused.stderr

        # A web-only process takes no worker lock: it starts beside the worker.
        with relay_process(
            "serve", "--no-worker", env=relay_env(tmp_path), cwd=tmp_path, log_path=tmp_path / "web.log"
        ) as web:
            wait_for(partial(_logged, tmp_path / "web.log", "relay.starting"), "web started")
            assert web.poll() is None

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    # The kernel dropped the dead worker's lock: the next one starts.
    second_log = tmp_path / "second.log"
    with relay_process("worker", env=env, cwd=tmp_path, log_path=second_log) as second:
        wait_for(partial(started_or_exited, second, second_log), "second worker started")
        assert second.poll() is None, second_log.read_text()
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0


def _logged(path: Path, event: str) -> bool:
    return path.exists() and f'"event": "{event}"' in path.read_text()
