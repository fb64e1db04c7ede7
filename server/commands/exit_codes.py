"""The exit codes of the commands, one copy of each.

``CONFIG`` is sysexits' ``EX_CONFIG``: the command cannot start as configured (a model not
found offline, a model file that is not a model, a device that is not there). Restarting does
not help, so the systemd unit ``lama-server install-service`` writes names it in
``RestartPreventExitStatus=`` together with ``USAGE``.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # the work failed: the model, the server, a file that could not be written
USAGE = 2  # bad input or flags (argparse's own code)
CONFIG = 78
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
