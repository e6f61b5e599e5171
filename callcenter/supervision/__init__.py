"""Supervision: call-backs of abandoned calls, citizen ratings, retention of personal data.

Plain services (``callbacks``, ``ratings``, ``retention``); the app builds and starts them in
``callcenter/wiring.py`` (``supervision_ctx``). Design notes: ``docs/supervision.md``.
"""
