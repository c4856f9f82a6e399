"""Curation: the steps (`steps/`) and the helpers only they use (MinHash, clusters, text normalisation, secret
detectors, eval-set reading)."""
