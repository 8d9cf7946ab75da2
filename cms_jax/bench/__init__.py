"""The benchmarks as library functions (behind the thin ``experiments/bench_*.py`` scripts).

Each module holds one benchmark: a config dataclass (the script's flags; ``smoke`` shrinks
the sizes so a test runs it in seconds) and ``run(cfg, out_dir)``, which measures, prints
the figures, writes ``<out_dir>/bench_<name>.json`` and returns its dict.

  engine.run          engine work items/s vs the bare jitted forward (Eq. 1's overhead)
  throughput.run      dense / incremental, fp32 / bf16 on VGG-16 vs the paper's torch procedure
  align.run           alignment images/s with worker processes (Section 3.1)
  loader.run          the job's Grain loader alone: cold and warm cache, exact resume
  memory.run          peak RSS of the main job against the number of images
  job.run             the main job end to end, and the Keras procedure beside it
  onnx_forward.run    the ONNX -> JAX converter against onnxruntime and jaxonnxruntime

Helpers: ``measure`` (matmul rate, timers, XLA FLOPs), ``torch_reference`` (the official
procedure), ``small_models`` (the engine on real small models), ``onnx_coverage`` (operators of
torch exports), ``keras_reference`` (the dense Keras procedure).
"""
