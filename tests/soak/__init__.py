"""The chaos soak: a mixed workload on real role processes, killed and restarted at random.

A seeded schedule (``random.Random(seed)``) decides what is started when, which
process is ``kill -9``-ed when, whether it comes back on the same or a wiped
state dir, and when the broker itself is killed or frozen. At the end the soak
checks the exactly-once promise where the outside world sees it: statuses,
entity states, dead letters, and stores rebuilt from the changelog.

* ``python -m tests.soak --seed N --minutes M`` runs it at any size;
* ``tests/soak/test_soak.py`` is the CI-sized run.

Modules: :mod:`~tests.soak.app` (the functions, imported by the child
processes), :mod:`~tests.soak.workload` (what is started, and what each
instance must end with), :mod:`~tests.soak.schedule` (phases, layouts,
faults), :mod:`~tests.soak.cluster` (the broker and the role processes, run
through :mod:`~tests.soak.role`), :mod:`~tests.soak.feeder` (the client side),
:mod:`~tests.soak.checks` and :mod:`~tests.soak.stores` (the end checks),
:mod:`~tests.soak.runner` (one soak run, phase by phase),
:mod:`~tests.soak.report` (what it found, and the verdict).
"""
