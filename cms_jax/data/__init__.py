"""Image lists, face preparation (decode, align, crop), progress and failure signatures: the
host-side data layer that the job, the figures, the benchmarks and fine-tuning share."""
