"""Learning-rate sweep: run it (learning_rate_sweep), watch it (diagnose_lr_sweep), explain it (analyze_lr_sweep)."""
