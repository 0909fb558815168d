"""Sound: the 502-d sound texture, its synthesis, sound labels (k-means, PCA codes) and what each label means."""
