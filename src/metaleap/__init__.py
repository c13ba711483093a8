"""metaleap: Leap, the meta-learner that transfers knowledge across learning processes."""

__version__ = "0.2.0"

__all__ = ["Contribution", "Leap", "LeapTask", "MetaGradStats", "Reduce", "TaskStats"]


def __getattr__(name: str) -> object:
    """The core's classes, imported on first use: ``import metaleap`` does not load torch, so
    that ``metaleap --help`` starts fast."""
    if name in __all__:
        from metaleap import leap, shared

        return getattr(shared if name in shared.__all__ else leap, name)
    raise AttributeError(f"module 'metaleap' has no attribute {name!r}")
