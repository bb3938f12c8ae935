"""The sweep engine: train one ExperimentConfig at several values of one field (and seeds), resumably.

``record`` (sweep.json and the sweep lock), ``view`` (the one reader of a sweep dir), ``launcher`` (how a point's
process starts, stops and dies with its parent), ``executors`` (where points run), ``engine`` (the loop),
``point`` (train one prepared run dir), ``plots`` (figures every client shares). Clients: ``lr_sweep``,
``batch_size``.
"""
