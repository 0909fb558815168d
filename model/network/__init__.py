"""The network and its training: CaffeNet-BN, training, RUN_DIR (a run's files), model files, texton labels."""
