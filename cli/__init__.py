"""Command-line front ends of p2pd, installed as the package ``p2pd_cli``."""
