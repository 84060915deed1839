"""Optuna sweeps over the suite's training options (`python run.py --sweep MODEL`).

`spaces`: the search space of each model and how it meets the data and the command line;
`study`: storage, safe study creation, the worker loop, heartbeats and stale-trial retries;
`pruning`: the Lightning pruning callback; `report`: trials table, plots and best trial.
"""
