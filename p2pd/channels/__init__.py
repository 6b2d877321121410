"""Delivery channels: reliability, sequencing, fragmentation and delta coding above the
session core."""
