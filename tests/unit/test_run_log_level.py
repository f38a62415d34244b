"""`llmctl run --log-level` (the chart's `logLevel`): what each level sets, with kopf.run stubbed out."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest
from llm_operator import cli


@pytest.mark.parametrize(("argv", "root", "objects"), [
    ([], logging.INFO, logging.WARNING),
    (["--log-level=debug"], logging.DEBUG, logging.NOTSET),
    (["-v"], logging.DEBUG, logging.NOTSET),
    (["--log-level=warning"], logging.WARNING, logging.WARNING),
    (["--log-level=error"], logging.ERROR, logging.WARNING),
])
def test_log_level(argv: list[str], root: int, objects: int, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(kopf, "run", lambda **kw: runs.append(kw))
    root_logger, objects_logger = logging.getLogger(), logging.getLogger("kopf.objects")
    saved = root_logger.level, list(root_logger.handlers), objects_logger.level
    objects_logger.setLevel(logging.NOTSET)
    try:
        assert cli.main(["run", "-n", "a", *argv]) == 0
        assert root_logger.level == root and objects_logger.level == objects
    finally:
        root_logger.setLevel(saved[0])
        root_logger.handlers[:] = saved[1]
        objects_logger.setLevel(saved[2])
    # The memo carries the namespaces to the child caches (one informer per watched namespace).
    assert runs == [{"standalone": True, "clusterwide": False, "namespaces": ["a"], "liveness_endpoint": None,
                     "memo": {"leader_election": None, "namespaces": ["a"]}}]


def test_unknown_level_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--log-level=verbose"])
    assert "invalid choice: 'verbose'" in capsys.readouterr().err
