"""callcenter: 112 emergency call handling for Asterisk (FastAGI routing, AMI queue tracking, intake, dispatch)."""

__version__ = "0.1.0"
