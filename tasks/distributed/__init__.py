"""Scale-out on a Ray cluster (``ZSR_RAY_ADDRESS``): embedding actors, evaluation fan-out, LLM work.

Nothing here is imported on the local path, so a machine without a cluster never loads Ray. Workers only
compute (vectors, rankings and measures, LLM answers); the driver, the process that runs the command or
the flow, commits every write with the guarantees of the local path.
"""
