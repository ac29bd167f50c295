"""The engine worker's operations, one module per family; ``core.engine.worker`` dispatches to them.

Each ``op_*`` function takes the worker (which owns llama.cpp, the model and its KV cache) and one
request dict, and answers on the worker's pipe. These modules import llama_cpp at the top: only the
worker process imports them.
"""
