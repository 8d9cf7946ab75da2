"""Scoring faces: vertex geometry (Algorithm 1 line 4), the drops backend (the one engine, Eqs. 1-3),
the ONNX backend probe, target rules and `Scorer` (a chunk of prepared crops to drops and sides).

The library layer beneath the job: the job, the figures and the benchmarks all score through it."""
