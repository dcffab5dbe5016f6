"""The base of every typed result file a stage writes (EvalMetrics, SafetyMetrics, BiasMetrics,
SFTMetrics, DPOMetrics, ...): the writer and every reader share one model, so a change of shape
fails validation, and the tests, instead of rendering as a wrong row in the report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict

from aloe.io import read_json, write_json

log = logging.getLogger(__name__)


class ResultFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def write(self, path: Path) -> None:
        # exclude_unset: an optional key the writer left out stays out of the file, not a null
        write_json(path, self.model_dump(mode="json", exclude_unset=True))

    @classmethod
    def read(cls, path: Path) -> Self:
        """Raises ValueError (pydantic's, naming the key) when the file has another shape."""
        return cls.model_validate(read_json(path))

    @classmethod
    def read_finished(cls, path: Path, fingerprint: str) -> Self | None:
        """The result an earlier run wrote at `path` with the same fingerprint (its inputs and settings),
        for a rerun to reuse; None when there is none, or it was made otherwise, or the file has another
        shape (an older aloe's: redone rather than failing the rerun)."""
        if not path.is_file():
            return None
        try:
            data = read_json(path)
            return cls.model_validate(data) if data.get("fingerprint") == fingerprint else None
        except ValueError as e:
            log.warning("%s: not reused (%s)", path, e)
            return None
