"""How a sequence is run at inference: one dataclass, checked once when it is made."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

CHOICES = {"spans": ("llm", "head"), "complete": ("none", "after", "joint", "graph"), "scores": ("decoded", "dense")}


@dataclass(frozen=True)
class InferenceOptions:
    """How a sequence is run; every field is checked once, here. ``None`` means the model's own setting."""

    window: int | None = None  # frames per window
    use_llm: bool = False  # with a SceneLLM, True: its chain; False: the relation head (docs/experiments.md)
    closed_vocabulary: bool = True  # SceneLLM names mapped onto the vocabulary (False: free text)
    samples: int | None = None  # SceneLLM: sampled turn-2 answers
    rescore: float | None = None  # SceneLLM: relation-head weight in relation scores
    name_rescore: float | None = None  # SceneLLM: class-head weight in object names
    spans: str | None = None  # SceneLLM: relation frames "llm" (as written) or "head"
    complete: str | None = None  # SceneLLM: how the head's relations complete the LLM's graph
    scores: str | None = None  # SceneLLM: "decoded" or "dense" relation scores

    def __post_init__(self):
        if self.window is not None and (
            isinstance(self.window, bool) or int(self.window) != self.window or self.window < 1
        ):
            raise ValueError(f"window must be a positive integer, not {self.window!r}")
        if self.samples is not None and (int(self.samples) != self.samples or self.samples < 0):
            raise ValueError(f"samples must be a non-negative integer, not {self.samples!r}")
        for name in ("rescore", "name_rescore"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"{name} must lie in [0, 1], not {v!r}")
        for name, allowed in CHOICES.items():
            v = getattr(self, name)
            if v is not None and v not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {v!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
