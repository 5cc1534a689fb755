"""Shelfwise: from shop behaviour events to a served, watched recommendation model and back."""

__version__ = "0.1.0"
