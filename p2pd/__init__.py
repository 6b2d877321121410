"""p2pd: a peer-to-peer networking sidecar for online game clients."""

__version__ = "0.1.0"
