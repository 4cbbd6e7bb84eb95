"""Reports rendered from results.json files.

``privacy`` (privacy/utility sweeps) and ``results`` (the experiments grid and benchmarks:
``RESULTS.md``), which assembles ``stats`` (mean ± std over seeds, rounds-to-quality),
``grid`` (reading an experiments folder), ``tables`` (its Markdown sections), ``bench``
(the benchmark documents), ``plots`` (the PNGs) and ``readme`` (the README's generated block);
``common`` holds the Markdown tables, cells and PNG writing they share.
"""
