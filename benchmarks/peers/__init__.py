"""The systems dsv4's benchmarks measure against, set up from this clone alone (llama.cpp: `llamacpp.py`)."""
