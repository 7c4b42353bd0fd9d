"""The latency subsystem: everything that touches the machine for the latency model, in one place.

- `profiles`: the one owner of profile files (which file a command reads: `load_profile`, the default-profile rule;
  the user's cached ones; the committed default; writing one);
- `timing`: the timing loops every measurement uses (interleaved rounds of blocks; a median over repeats);
- `machine`: which machine a timing was taken on (the CPU's model and vector instructions, or the GPU), as
  reports, profile labels and autotune's cache keys say it;
- `calibrate`: timing the ops plans lower to and fitting a profile (`ttplan calibrate`), and its held-out check;
- `autotune`: timing a layer's candidate orders and lowerings against the dense conv, and its cache.

The model itself (`LatencyProfile`, the predictions, the fit) is torch-free data in `ttplan.core.latency`; library
functions take a profile as an argument and never read one. Importing this package imports nothing else: `profiles`
and `timing` are torch-free, `machine`, `calibrate` and `autotune` import torch.
"""
