"""Performance: side-by-side benchmarks (`sigprop bench`), FLOP counts, timers, probe cost and CPU allocator tuning."""
