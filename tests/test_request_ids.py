"""Request ids the relay makes: 32 random hex digits each, never one twice, nor a parent's in a fork."""

import os
import re

from relay.http import IDS_PER_DRAW, new_request_id


def test_request_ids_are_32_hex_digits_and_distinct_across_draws():
    made = [new_request_id() for _ in range(3 * IDS_PER_DRAW)]

    assert all(re.fullmatch(r"[0-9a-f]{32}", made_id) for made_id in made)
    assert len(set(made)) == len(made)


def test_a_forked_process_draws_ids_of_its_own():
    new_request_id()  # the parent holds drawn ids when it forks
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then gone without running the parent's cleanup
        os.write(writing, new_request_id().encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(pid, 0)
    childs = os.read(reading, 64).decode()
    os.close(reading)

    parents = [new_request_id() for _ in range(IDS_PER_DRAW)]
    assert re.fullmatch(r"[0-9a-f]{32}", childs)
    assert childs not in parents
