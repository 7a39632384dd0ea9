"""What every backbone shares: errors and exit codes, the progress stream, the
library and its files, bundles and checkpoints, reading images, the training
views cut from them, the device, resuming, and the run skeleton (`run.execute`)
that drives one backbone's training from checkpoint folder to committed bundle.

Nothing in `core` imports a backbone package (`pixel`, `sd`).
"""
