"""Reports rendered from results.json files.

``privacy`` (privacy/utility sweeps), ``results`` (the experiments grid and benchmarks),
``common`` (the Markdown tables and PNG figures both write).
"""
