"""Incremental detokenization with stop strings: emit only text that can no longer change."""

from __future__ import annotations

from typing import Any

_REPLACEMENT = "\ufffd"
# Decoding only the tokens since the last commit keeps each step O(window), not O(generated tokens).
_WINDOW = 8


class TextStream:
    """Turns generated token ids into text deltas, holding back possible stop-string prefixes."""

    def __init__(self, *, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self._tok = tokenizer
        self._stop = stop
        self._max_stop = max((len(s) for s in stop), default=0)
        self._ids: list[int] = []
        self._window_start = 0  # token index after the last commit
        self._committed = ""  # text of ids[:_window_start], which ends on a character boundary
        self._emitted = 0  # characters of the text already handed out
        self.stopped = False
        self.text = ""

    def _candidate(self) -> str:
        window = self._tok.decode(self._ids[self._window_start :], skip_special_tokens=True)
        return self._committed + str(window)

    def add(self, token_id: int) -> str:
        """Add one token; return the text delta that is safe to send now."""
        self._ids.append(token_id)
        candidate = self._candidate()
        complete = not candidate.endswith(_REPLACEMENT)
        if complete and len(self._ids) - self._window_start >= _WINDOW:
            self._committed = candidate
            self._window_start = len(self._ids)
        if self._stop:
            search_from = max(0, self._emitted - self._max_stop)
            hits = [i for s in self._stop if (i := candidate.find(s, search_from)) >= 0]
            if hits:
                self.stopped = True
                self.text = candidate[: min(hits)]
                return self._emit(len(self.text))
        self.text = candidate
        # An incomplete multi-byte character decodes as U+FFFD: hold it until its last byte arrives.
        safe = len(candidate.rstrip(_REPLACEMENT))
        base, hold = candidate[:safe], 0
        for s in self._stop:
            for k in range(min(len(s) - 1, safe), 0, -1):
                if base.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return self._emit(safe - hold)

    def _emit(self, upto: int) -> str:
        if upto <= self._emitted:
            return ""
        delta = self.text[self._emitted : upto]
        self._emitted = upto
        return delta

    def finish(self) -> str:
        """Return what was held back; called once when the request ends."""
        return self._emit(len(self.text))
