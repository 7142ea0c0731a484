"""How computation runs, knowing no model or task: processes (DDP), precision and memory
format, host memory, stop signals."""
