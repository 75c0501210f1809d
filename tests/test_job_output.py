"""A job's traceback reaches the log as one entry; its other lines stay one entry each."""

from sppo.job_output import TracebackJoiner

TRACEBACK = [
    "[rank0]: Traceback (most recent call last):",
    '[rank0]:   File "/x/jobs/train_deepspeed.py", line 10, in <module>',
    "[rank0]:     main()",
    "[rank0]:     ~~~~^^",
    "[rank0]: ValueError: no recipe value fills the field",
]


def _entries(lines: list[str]) -> list[str]:
    joiner = TracebackJoiner()
    out = [entry for line in lines for entry in joiner.feed(line)]
    return out + joiner.flush()


def test_a_traceback_is_one_entry_between_plain_lines():
    entries = _entries(["step 1/4", *TRACEBACK, "launcher: exit 1"])
    assert entries == ["step 1/4", "\n".join(TRACEBACK), "launcher: exit 1"]


def test_a_chained_traceback_is_one_entry_per_exception():
    chained = [
        "Traceback (most recent call last):",
        '  File "a.py", line 1, in f',
        "KeyError: 'x'",
        "The above exception was the direct cause of the following exception:",
        "Traceback (most recent call last):",
        '  File "a.py", line 3, in g',
        "RuntimeError: boom",
    ]
    assert _entries(chained) == ["\n".join(chained[:3]), "\n".join(chained[3:])]


def test_a_cut_off_traceback_is_still_logged():
    assert _entries(TRACEBACK[:3]) == ["\n".join(TRACEBACK[:3])]
