"""The experiments: ``base`` (configs, runs, processes), ``trainer`` (the generic
meta-trainer every protocol uses), ``transfer`` (the Omniglot protocol, SPEC §2.1) and
``evaluation`` (training a task from an initialization and scoring it)."""
