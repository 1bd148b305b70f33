"""Backends: how a system's parameters are stored, differentiated and stepped."""
