"""NAT traversal, sans-IO: STUN/TURN codecs and clients, NAT discovery, candidates, checks."""
