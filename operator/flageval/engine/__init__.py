"""Sends the requests of one dataset to one endpoint: bounded workers, retries, cache, journal, progress."""
