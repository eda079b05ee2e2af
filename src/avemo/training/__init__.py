"""Training, evaluation data and export: everything that needs torch (the [train] extra).

    datasets, splits ─ augment ─ features (the frozen encoders' inputs, cached) ─ batches ─
    model (the network, read top to bottom) ─ train (with probe, context) ─ export (ONNX)

Nothing here is imported by `import avemo` or `avemo predict`: inference runs the exported graphs
on ONNX Runtime. `composite` builds the test clips and conversations of the benchmarks.
"""
