"""The accuracy study (issue 3, items 2 and 4): which recognition ideas help, measured on the shared LFW data.

    python bench/accuracy_study.py [--faces DIR] [--out bench/out]

Modules, from the bottom up:

    protocol      the 1:N protocol CSV and LFW pairs.txt
    rules         decision rules and counting over distance matrices (pure numpy)
    stats         exact bounds, the impostor-distance tail model, the gallery-size simulation
    encodings     the dlib pipeline on the photos, cached per (variant, file) in encodings.npz
    study         every idea as rows of one table; choosing the defaults
    gallery_size  how false accepts grow with the number enrolled
    cli           the command line: table, CSVs, DET plot

The door's own figures come from ``./run evaluate`` (edge/evaluate.py), which
runs the real door path on camera-sized frames; docs/accuracy.md has both.
"""
