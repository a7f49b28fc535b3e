"""The detectors, each behind the small ``Detector`` protocol of base.py; which of them run for
a policy is decided in build.py."""
