"""Units and their analyses: activations, top images, the layer hooks, dissection, ablation, emergence, probes, prediction."""
