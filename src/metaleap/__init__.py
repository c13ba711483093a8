"""metaleap: Leap, the meta-learner that transfers knowledge across learning processes."""

__version__ = "0.2.0"

from metaleap.leap import Contribution, Leap, LeapTask, MetaGradStats, Reduce, TaskStats  # noqa: E402

__all__ = ["Contribution", "Leap", "LeapTask", "MetaGradStats", "Reduce", "TaskStats"]
