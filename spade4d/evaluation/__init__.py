"""Evaluation of scene-graph prediction files (docs/formats.md); never needs the model."""

from spade4d.evaluation.metrics_2d import Evaluator2D, Options2D
from spade4d.evaluation.metrics_4d import Evaluator4D, Options4D
from spade4d.evaluation.predictions import (
    PredictionFile2D,
    PredictionFile4D,
    PredictionFileError,
    load_predictions_4d,
    write_predictions_2d,
    write_predictions_4d,
)

__all__ = [
    "Evaluator2D",
    "Evaluator4D",
    "Options2D",
    "Options4D",
    "PredictionFile2D",
    "PredictionFile4D",
    "PredictionFileError",
    "load_predictions_4d",
    "write_predictions_2d",
    "write_predictions_4d",
]
