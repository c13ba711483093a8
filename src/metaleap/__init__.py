"""metaleap: Leap, the meta-learner that transfers knowledge across learning processes."""

from metaleap.leap import Leap, LeapTask, MetaGradStats, TaskStats

__all__ = ["Leap", "LeapTask", "MetaGradStats", "TaskStats"]
__version__ = "0.1.0"
