"""Training towards a TT format: the ADMM state, data sets, data-parallel helpers and the run pipeline."""
