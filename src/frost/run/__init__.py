"""Running the algorithm: a training run's loop (`trainer`), its folder and checkpoints (`checkpoint`, `runlog`),
the data it reads (`data`), data parallelism and FSDP groups (`distributed`, `fsdp`), validation and evaluation
(`evaluation`), the GPU memory plan (`memplan`) and claims on shared work (`claims`). Imports the top level (the
algorithm), never `frost.analysis` or `frost.tools`."""
