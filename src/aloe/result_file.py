"""The base of every typed result file a stage writes (EvalMetrics, SafetyMetrics, BiasMetrics,
SFTMetrics, DPOMetrics, ...): the writer and every reader share one model, so a change of shape
fails validation, and the tests, instead of rendering as a wrong row in the report."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict

from aloe.io import read_json, write_json


class ResultFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def write(self, path: Path) -> None:
        # exclude_unset: an optional key the writer left out stays out of the file, not a null
        write_json(path, self.model_dump(mode="json", exclude_unset=True))

    @classmethod
    def read(cls, path: Path) -> Self:
        """Raises ValueError (pydantic's, naming the key) when the file has another shape."""
        return cls.model_validate(read_json(path))
