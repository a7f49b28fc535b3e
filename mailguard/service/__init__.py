"""The engine as a system service: the running daemon (daemon.py: start, stop, signals, reload,
the transparent-mode rules), its control socket (control.py), the pid file (pidlock.py) and
logging (logsetup.py)."""
