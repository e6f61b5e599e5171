"""Dispatch: call the responsible agencies' duty lines, brief the officer, record who accepted.

``agencies`` holds the directory (who handles what, on which lines), ``dispatcher`` the per-agency
call tasks, ``prompts`` the spoken briefing, ``service`` the wiring into the app.
"""
