"""``mmserve advise``: which mode should a model use? Requirements (or an endpoint's
captured traffic) in; the mode, the reasons, the limits that decided it and a rough
monthly cost of every mode out. Pure functions of their arguments and the settings: no
server, no queue, nothing read but the store (for a capture).

The rule order is in :mod:`serving.advise.rules`; the cost model in
:mod:`serving.advise.costs`; reading traffic from a data capture in
:mod:`serving.advise.traffic`.
"""

from __future__ import annotations

from serving.advise.model import (
    MODES,
    Advice,
    InputKind,
    Limits,
    Mode,
    ModeView,
    Pattern,
    Requirements,
)
from serving.advise.rules import advise
from serving.advise.traffic import NoCapture, Traffic, read_traffic, traffic_of

__all__ = [
    "MODES",
    "Advice",
    "InputKind",
    "Limits",
    "Mode",
    "ModeView",
    "NoCapture",
    "Pattern",
    "Requirements",
    "Traffic",
    "advise",
    "read_traffic",
    "traffic_of",
]
