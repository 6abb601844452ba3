"""Registered apps and their API keys."""
