"""Ambient's pipeline: audio -> textures -> labels -> network -> training -> units."""
