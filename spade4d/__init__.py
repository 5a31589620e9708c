"""spade4d: 4D panoptic scene graph generation.

The Python API (docs in each object)::

    import spade4d

    pipe = spade4d.Pipeline4D.from_pretrained("outputs/demo/finetune_4d/model")
    test = spade4d.open_point_clouds("spade4d-pc", "outputs/demo/synthetic/psg4d_pc", "test")
    predictions = [pipe(points) for points, _ in test]
    metrics = spade4d.evaluate_4d(predictions, test)

Names are resolved on first use, so ``import spade4d`` stays light (no torch until a model is needed).
"""

from spade4d.version import __version__

_EXPORTS = {
    "Pipeline4D": "spade4d.inference.pipeline",
    "InferenceOptions": "spade4d.inference.pipeline",
    "evaluate_4d": "spade4d.evaluation.metrics_4d",
    "open_point_clouds": "spade4d.data.psg4d",
    "read_frames": "spade4d.data.own_frames",
    "PointSequence": "spade4d.structures",
    "SceneGraph4D": "spade4d.structures",
    "write_predictions_4d": "spade4d.evaluation.predictions",
    "load_predictions_4d": "spade4d.evaluation.predictions",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spade4d' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
