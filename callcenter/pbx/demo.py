"""The demo PBX's layout: which softphones, duty lines and ports ``callcenter demo`` and
``python -m callcenter.pbx up`` start Asterisk with."""

from __future__ import annotations

from callcenter.dispatch.agencies import load_agencies
from callcenter.pbx.render import PbxSpec

DEMO_TAKERS = (("taker1", 5071), ("taker2", 5072))
#: The public network as the demo's call-backs see it: every citizen number reaches the SIPp phone here.
DEMO_CITIZEN = ("citizen", 5080)
DEMO_AGENCY_BASE_PORT = 5100


def demo_agency_lines() -> tuple[tuple[str, int], ...]:
    """Every PJSIP duty line of the packaged agency directory, each on its own loopback port."""
    names = sorted(
        {line.split("/", 1)[1] for agency in load_agencies().agencies.values() for line in agency.lines if "/" in line}
    )
    return tuple((name, DEMO_AGENCY_BASE_PORT + i) for i, name in enumerate(names))


def demo_spec(
    sip_port: int = 5060,
    ami_port: int = 5038,
    ami_secret: str = "",
    agi_port: int = 4573,
    agi_secret: str = "",
    nodes: int = 1,
    instance: str = "demo",
) -> PbxSpec:
    """The demo wiring: call-takers' softphones on 5071/5072, supervisor (overflow) on 5079, the citizens'
    line (call-backs, rating calls) on 5080, agencies 5100+. With ``nodes`` app nodes, node *i* serves
    FastAGI on ``agi_port + i`` and the dialplan tries them in that order (``CC_AGI_URLS``)."""
    return PbxSpec(
        instance=instance,
        sip_port=sip_port,
        ami_port=ami_port,
        ami_username="callcenter",
        ami_secret=ami_secret,
        agi_url=f"agi://127.0.0.1:{agi_port}",
        agi_fallbacks=tuple(f"agi://127.0.0.1:{agi_port + i}" for i in range(1, nodes)),
        agi_secret=agi_secret,
        takers=DEMO_TAKERS,
        agencies=demo_agency_lines(),
        supervisor_port=5079,
        citizens=(DEMO_CITIZEN,),
        citizen_trunk=DEMO_CITIZEN[0],
    )
