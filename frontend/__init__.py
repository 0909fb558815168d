"""Templates and static assets of the annotation web app."""
