"""``python -m tests.soak.role ROLE APP``: the ``durafka`` command, with stacks on SIGUSR1.

The soak runs its roles through this module instead of ``python -m durafka.cli``
so that a role that stops making progress can be asked where it is: SIGUSR1
makes :mod:`faulthandler` write every thread's stack to the role's log, and the
role runs on. Nothing else differs from the ``durafka`` command.
"""

from __future__ import annotations

import faulthandler
import signal

from durafka.cli import main

if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    main()
