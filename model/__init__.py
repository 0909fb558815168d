"""Ambient's pipeline: audio -> textures -> labels -> network -> training -> units."""
import os

# No model file is ever unpickled with code, in any process that imports the pipeline (the server, the CLI,
# job children, Ray tasks): torch.load reads this variable at every call and then loads weights only, even
# where torch itself passes weights_only=False (torch.export.load's fallbacks). Assigned, not setdefault: a
# user's TORCH_FORCE_WEIGHTS_ONLY_LOAD=0 may not turn it off; the opposite variable would make torch.load fail.
os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
