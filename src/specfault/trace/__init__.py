"""Real programs: record a program's memory behaviour on the host with perf,
replay it in the model, simulate it (docs/traces.md).

``record.py`` runs a command under perf (and ptrace, for clone flags and
the final layout) and writes a trace; ``format.py`` is the trace file;
``replay.py`` replays a trace in the sequential model and compares every
result with the host's; ``sim.py`` runs it on the simulator.
"""
