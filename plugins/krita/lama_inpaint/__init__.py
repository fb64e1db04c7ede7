"""LaMa object removal for Krita: Tools › Scripts › Remove object."""

from krita import Krita

from .extension import LamaExtension

Krita.instance().addExtension(LamaExtension(Krita.instance()))
