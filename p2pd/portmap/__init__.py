"""Port mapping: asking the home router to forward the daemon's UDP port (sans-IO).

PCP (RFC 6887, MAP opcode) and NAT-PMP (RFC 6886) as stateless codecs
(:mod:`p2pd.portmap.pcp`, :mod:`p2pd.portmap.natpmp`), and :class:`PortMapper`
(:mod:`p2pd.portmap.mapper`): one mapping's life across protocols (PCP, then
NAT-PMP, then UPnP IGD), renewed at half its lifetime and deleted at the end,
driven by ``now``. UPnP's SOAP exchanges are carried out by the trio shell
(:mod:`p2pd.io.portmap`) with the miniupnpc library; the mapper only asks for them.
"""

from p2pd.portmap.events import MapperState, Mapping, MappingChanged, PortMapStatus, Protocol
from p2pd.portmap.mapper import MapperConfig, PortMapper

__all__ = [
           "MapperConfig",
           "MapperState",
           "Mapping",
           "MappingChanged",
           "PortMapStatus",
           "PortMapper",
           "Protocol",
]
