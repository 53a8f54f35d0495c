"""The built-in learners by name: what ``--learner``, a ``[learner]`` table's ``name`` and
the study use (:func:`make_learner`)."""

from __future__ import annotations

from typing import Any

from jaxstage.eps_greedy import EpsGreedy
from jaxstage.exp3 import Exp3
from jaxstage.learner import StageLearning
from jaxstage.learner_interface import Learner

__all__ = ["LEARNERS", "make_learner", "learner_label"]

#: Name -> learner class (``Learner.name``).
LEARNERS: dict[str, type[Learner]] = {cls.name: cls for cls in (StageLearning, EpsGreedy, Exp3)}
#: The keywords each learner takes under the options' names (``explore_prob`` is EXP3's
#: ``gamma``: its uniform share).
_KEYWORDS = {
    "stage": {
        "stage_length": "stage_length",
        "explore_prob": "explore_prob",
        "update_prob": "update_prob",
        "info": "info",
        "info_sample_size": "info_sample_size",
        "info_noise_std": "info_noise_std",
        "info_sharing": "info_sharing",
    },
    "eps-greedy": {"stage_length": "stage_length", "explore_prob": "explore_prob"},
    "exp3": {"stage_length": "stage_length", "explore_prob": "gamma", "eta": "eta"},
}


def make_learner(name: str = "stage", **options: Any) -> Learner:
    """The learner ``name`` (one of :data:`LEARNERS`) configured by ``options``, keywords
    of ``StageLearning`` (``stage_length``, ``explore_prob``, ``update_prob``, ``info``,
    ...) or ``eta`` (EXP3); ``explore_prob`` is EXP3's ``gamma``. A keyword the learner
    does not take is an error naming it.

    Example:
        >>> make_learner("exp3", explore_prob=0.1, eta=0.2)
        Exp3(eta=0.2, gamma=0.1, stage_length=50)
    """
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; valid learners: {', '.join(LEARNERS)}")
    keywords = _KEYWORDS[name]
    unknown = sorted(set(options) - set(keywords))
    if unknown:
        raise ValueError(f"learner {name!r} takes {', '.join(keywords)}; not {', '.join(unknown)}")
    return LEARNERS[name](**{keywords[key]: value for key, value in options.items()})


def learner_label(learner: Learner) -> str:
    """A short name for folders and labels: stage learning's information mode (as
    before other learners existed), else the learner's name."""
    return learner.info if isinstance(learner, StageLearning) else learner.name
