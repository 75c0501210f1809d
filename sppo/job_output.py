"""A launched job's output, line by line, as log entries: a Python traceback, which a rank prints one line at
a time, becomes one entry, so a log viewer (the Prefect UI) shows it as one block instead of dozens of
entries with the cause somewhere in the middle."""

from __future__ import annotations

import re

# Launchers may prefix each line of a rank ("[rank1]: ", "[default0]:").
_PREFIX = re.compile(r"^(\[[^\]]*\]:\s?)?")
# A chained exception's traceback starts with the sentence that links it to the one before.
_CHAINS = ("During handling of the above exception", "The above exception was the direct cause")
_STARTS = ("Traceback (most recent call last):", *_CHAINS)
# Lines that keep a traceback going although they are not indented.
_CONTINUES = (*_CHAINS, "Traceback (")


def _body(line: str) -> str:
    return line[_PREFIX.match(line).end() :]


class TracebackJoiner:
    """feed() each line, log what it returns; flush() at the end. Lines outside a traceback come back as
    they are; a traceback comes back as one entry once its last line (the exception) has arrived."""

    def __init__(self) -> None:
        self._block: list[str] = []

    def feed(self, line: str) -> list[str]:
        body = _body(line)
        if not self._block:
            if body.startswith(_STARTS):
                self._block = [line]
                return []
            return [line]
        self._block.append(line)
        if not body.strip() or body[:1].isspace() or body.startswith(_CONTINUES):
            return []
        # Unindented: the exception line, unless a chained traceback follows (it starts with a gap line).
        return self.flush()

    def flush(self) -> list[str]:
        block, self._block = self._block, []
        return ["\n".join(block)] if block else []
