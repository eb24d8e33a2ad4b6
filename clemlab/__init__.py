"""clemlab: correlative light and electron microscopy in Jupyter.

Public API (see ``design.md``). Heavy modules load on first use of their names.
"""
