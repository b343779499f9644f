"""Attribute specs: loading FLUXSynID's file layout, validating it, sampling identities, and checking samples."""
