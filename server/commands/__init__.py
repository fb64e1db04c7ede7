"""The command lines.

``lama-server`` (serve, plug-in install) and ``lama-inpaint`` (files, folders, export).
"""
