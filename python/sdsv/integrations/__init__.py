"""Integrations of the SDSV sampler with other libraries (imported only on demand)."""
