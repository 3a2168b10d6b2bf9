"""What an NNI trial needs to know about where it runs, below the training loop that uses it.

``environment`` (is this an NNI trial, its output and experiment folders), ``concurrency`` (the torch threads
a trial takes among its experiment's concurrent trials), ``manager_watch`` (ending a trial, or the dispatcher,
whose NNI manager is gone). These modules import neither Lightning nor the strategies (importing them still
loads the parent package ``nni_bixnas.training``).
"""
