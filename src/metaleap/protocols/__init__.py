"""The experiments: ``base`` (configs, runs, processes), ``trainer`` (the generic
meta-trainer every protocol uses), ``transfer`` (the Omniglot protocol, docs/experiments.md) and
``evaluation`` (training a task from an initialization and scoring it)."""
