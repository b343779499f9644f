"""Generators: prompt writers, document and live image backends (procedural renderer, FLUX, Kontext, Arc2Face)."""
